"""A small ingested service per backend (``test:tiny`` over 40 synthetic pairs), shared by a module."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.db.session import make_engine, make_session_factory, upgrade
from app.main import create_app
from app.pipelines.ingest import IngestReport, ingest
from tests.conftest import fresh_postgres_database
from training.synthetic.shapes import SyntheticDataset, generate_dataset


@dataclass
class Service:
    settings: Settings
    client: TestClient
    dataset: SyntheticDataset
    report: IngestReport
    session_factory: object


def wait_for(condition, timeout: float = 30.0, every: float = 0.05):
    """Poll ``condition`` until it returns something truthy (and return that), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout} s: {condition}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app, port: int) -> Iterator[str]:
    """``app`` on uvicorn in a thread, on loopback; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def make_settings(tmp, url: str, **overrides) -> Settings:
    values = dict(model_spec="test:tiny", device="cpu", num_workers=0, index_refresh_seconds=0)
    return Settings(data_dir=tmp, database_url=url, **{**values, **overrides})


def ingested(tmp, url: str, n: int = 40, **overrides) -> Settings:
    """A migrated database at ``url`` holding ``n`` synthetic pairs (32 px), ingested with
    ``make_settings(tmp, url, **overrides)``, which are returned."""
    upgrade(url)
    settings = make_settings(tmp, url, **overrides)
    engine = make_engine(url)
    try:
        manifest = generate_dataset(tmp / "ds", n=n, seed=0, image_size=32).manifest
        ingest(manifest, settings, make_session_factory(engine))
    finally:
        engine.dispose()
    return settings


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def service(request, tmp_path_factory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("service")
    if request.param == "sqlite":
        database = nullcontext(f"sqlite:///{tmp / 'db.sqlite'}")
    else:
        database = fresh_postgres_database(request.getfixturevalue("postgres_admin"))
    with database as url:
        settings = make_settings(tmp, url, max_upload_bytes=200_000, max_image_pixels=1_000_000)
        upgrade(url)
        engine = make_engine(url)
        session_factory = make_session_factory(engine)
        dataset = generate_dataset(tmp / "synthetic", n=40, seed=0, image_size=32)
        report = ingest(dataset.manifest, settings, session_factory)
        with TestClient(create_app(settings)) as client:
            yield Service(settings, client, dataset, report, session_factory)
        engine.dispose()


# --- a real browser: Debian's Chromium driven headless by playwright (never `playwright install`) ---

CHROMIUM = os.environ.get("CROSSMODAL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("CROSSMODAL_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (CI installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()
