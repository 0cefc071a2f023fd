"""The fake emoji registry and npm (``tests.helpers.emoji_fakes``) as fixtures."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from tests.helpers.emoji_fakes import NPM_SCRIPT, FakeNpm, build_registry
from training.emoji.packages import Sources


@pytest.fixture(scope="session")
def fake_registry(tmp_path_factory) -> tuple[Path, Sources]:
    root = tmp_path_factory.mktemp("registry")
    return root, build_registry(root)


@pytest.fixture
def fake_npm(fake_registry, tmp_path, monkeypatch) -> FakeNpm:
    """``npm`` on PATH (and nothing else) that serves the fake registry."""
    registry, sources = fake_registry
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "npm"
    script.write_text(NPM_SCRIPT.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "npm.log"
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_NPM_REGISTRY", str(registry))
    monkeypatch.setenv("FAKE_NPM_LOG", str(log))
    monkeypatch.delenv("FAKE_NPM_FAIL", raising=False)
    assert os.access(script, os.X_OK)
    return FakeNpm(registry, bin_dir, log, sources)
