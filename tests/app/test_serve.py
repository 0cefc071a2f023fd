"""`crossmodal serve` processes: replicas sharing one port (SO_REUSEPORT) both answer."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from app.config import Settings, settings_env
from app.db.session import upgrade
from tests.helpers.service import free_port, wait_for


@pytest.mark.slow  # two `crossmodal serve` processes, each loading torch and the model
def test_two_replicas_share_one_port_and_both_answer(tmp_path):
    settings = Settings(data_dir=tmp_path, model_spec="test:tiny", device="cpu", port=free_port(), reuse_port=True)
    upgrade(settings.resolved_database_url)
    env = {**os.environ, **settings_env(settings)}
    replicas = [
        subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--no-worker"], env=env, stderr=subprocess.DEVNULL)
        for _ in range(2)
    ]
    url = f"http://127.0.0.1:{settings.port}/readyz"

    def instance() -> str | None:
        try:
            return httpx.get(url, timeout=5).json()["instance"]  # a new connection each time
        except httpx.HTTPError:
            return None

    try:
        wait_for(lambda: instance() is not None, timeout=120)
        seen: set[str] = set()
        wait_for(lambda: seen.add(instance()) or len(seen - {None}) == 2, timeout=120)
    finally:
        for r in replicas:
            r.terminate()
            r.wait(timeout=30)
    assert all(r.returncode is not None for r in replicas)
