"""The ``crossmodal`` command line, end to end on SQLite with the tiny model."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from app.cli import app
from app.config import get_settings, settings_markdown_table
from app.db.session import current_revision, head_revision

runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSMODAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CROSSMODAL_MODEL_SPEC", "test:tiny")
    monkeypatch.setenv("CROSSMODAL_DEVICE", "cpu")
    monkeypatch.setenv("CROSSMODAL_NUM_WORKERS", "0")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def run(*args: str):
    result = runner.invoke(app, list(args))
    return result


def test_config_table():
    result = run("config-table")
    assert result.exit_code == 0 and result.output.strip() == settings_markdown_table().strip()


def test_db_upgrade_then_synth_then_ingest_twice(env):
    assert run("db", "upgrade").exit_code == 0
    assert current_revision(get_settings().resolved_database_url) == head_revision()

    result = run("synth", str(env / "ds"), "--n", "20", "--image-size", "32")
    assert result.exit_code == 0, result.output
    manifest = env / "ds" / "manifest.csv"
    assert manifest.is_file()

    first = run("ingest", str(manifest))
    assert first.exit_code == 0, first.output
    assert "items added:      20" in first.output and "image index published" in first.output
    again = run("ingest", str(manifest))
    assert again.exit_code == 0 and "items added:      0" in again.output
    assert "already present:  20" in again.output


def test_ingest_errors_are_messages_not_tracebacks(env):
    missing = run("ingest", str(env / "nope"))
    assert missing.exit_code == 2 and "crossmodal db upgrade" in missing.output
    assert run("db", "upgrade").exit_code == 0
    missing = run("ingest", str(env / "nope"))
    assert missing.exit_code == 2 and "no such folder or manifest" in missing.output
    assert "Traceback" not in missing.output
