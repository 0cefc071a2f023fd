"""``crossmodal datasets emoji OUT``: builds the folder; a missing npm or a bad checksum is one line, exit 2."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from training.emoji import build as build_module
from training.emoji.packages import Package


@pytest.fixture
def cli(fake_npm, monkeypatch):
    from app.cli import app

    monkeypatch.setattr(build_module, "Sources", lambda: fake_npm.sources)
    return lambda *args: CliRunner().invoke(app, ["datasets", "emoji", *map(str, args)])


def test_the_command_builds_the_dataset(cli, tmp_path):
    result = cli(tmp_path / "out", "--salt", "7", "--cache", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert "17 concepts in 12 families" in result.output and "salt '7'" in result.output
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["salt"] == "7"


def test_without_npm_the_command_says_so_in_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    result = cli(tmp_path / "out", "--cache", tmp_path / "cache")
    assert result.exit_code == 2
    assert "error: `npm` is not on PATH" in result.output and "emoji-datasource@1.0.0" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_a_checksum_mismatch_is_one_line_too(cli, fake_npm, tmp_path, monkeypatch):
    forged = dataclasses.replace(fake_npm.sources, data=Package("emoji-datasource", "1.0.0", "sha512-AAAA"))
    monkeypatch.setattr(build_module, "Sources", lambda: forged)
    result = cli(tmp_path / "out", "--cache", tmp_path / "cache")
    assert result.exit_code == 2 and "does not match its recorded checksum" in result.output
    assert "Traceback" not in result.output
