"""Shared fixtures.

Database: ``db_url`` runs each test on SQLite and on PostgreSQL. PostgreSQL is the
server at ``CROSSMODAL_TEST_POSTGRES_URL``; when it does not answer those cases
are skipped, except under ``CI`` where they fail (CI always has one). Each
PostgreSQL test gets its own freshly created database, dropped afterwards.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from pathlib import Path

from app.runtime import apply_runtime_defaults

apply_runtime_defaults()  # passive OpenMP waits before torch/faiss load: 2 shared cores

# ruff: noqa: E402
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from app.db.session import make_engine, make_session_factory, upgrade
from tests.helpers import durations
from tests.helpers.emoji_fakes import NPM_SCRIPT, FakeNpm, build_registry
from tests.helpers.postgres import POSTGRES_URL, fresh_postgres_database
from training.emoji.packages import Sources


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    durations.longest_files_first(items, durations.load())  # tests/helpers/durations.py says why


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An autocommit engine on the server's maintenance database, for CREATE/DROP DATABASE."""
    engine = create_engine(
        POSTGRES_URL,
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": 3},
    )
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        engine.dispose()
        why = str(getattr(exc, "orig", exc)).splitlines()[0]
        reason = f"PostgreSQL at {make_url(POSTGRES_URL).render_as_string()} not reachable: {why}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must run the PostgreSQL tests)")
        pytest.skip(f"{reason}; set CROSSMODAL_TEST_POSTGRES_URL to run these")
    yield engine
    engine.dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """An empty database (no tables, not migrated) on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_admin")) as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to head (migrations, never ``create_all``)."""
    upgrade(db_url)
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with make_session_factory(engine)() as session:
        yield session


@pytest.fixture(scope="session", autouse=True)
def _feature_cache(tmp_path_factory) -> Iterator[None]:
    """The bootstraps' frozen-tower feature cache lives in this run's temporary directory, never in
    the user's ``~/.cache`` (a run must not read what an earlier run or another checkout wrote)."""
    os.environ.setdefault("CROSSMODAL_FEATURE_CACHE", str(tmp_path_factory.mktemp("feature-cache")))
    yield


# The fake emoji registry and npm (tests.helpers.emoji_fakes), for the emoji set's and the emoji demo's tests.
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


@pytest.fixture(autouse=True)
def _no_refresh_thread_outlives_its_test() -> Iterator[None]:
    """A served app stops its snapshot refresher when its lifespan ends; one left running would keep
    reading a database its test has finished with (and log errors once the file is gone)."""
    before = {t.ident for t in threading.enumerate() if t.name == "crossmodal-refresh"}
    yield
    deadline = time.monotonic() + 5
    while True:
        left = [t for t in threading.enumerate() if t.name == "crossmodal-refresh" and t.ident not in before]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"{len(left)} snapshot refresh thread(s) still running after the test: an app was not shut down"
