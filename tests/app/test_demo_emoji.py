"""`crossmodal demo` on the real emoji set: fetch (npm, or the package cache) -> bootstrap -> ingest -> search.

One house keeps it short (its 1,631 drawings indexed; the heads train on the three training
houses' train concepts, as in the full demo). The demo's first example query must find a cat.
"""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import app as cli
from app.cli.demo import EMOJI_QUERIES
from app.config import get_settings
from app.main import create_app
from training.emoji.packages import default_cache_dir


def _reachable() -> bool:
    return shutil.which("npm") is not None or any(default_cache_dir().glob("emoji-datasource-*.tgz"))


@pytest.mark.slow
@pytest.mark.skipif(not _reachable(), reason="needs npm and its registry, or a warm emoji package cache")
def test_the_emoji_demo_finds_a_cat_for_a_cat(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSMODAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CROSSMODAL_DEVICE", "cpu")
    monkeypatch.setenv("CROSSMODAL_NUM_WORKERS", "1")
    monkeypatch.setenv("CROSSMODAL_INDEX_REFRESH_SECONDS", "0")
    monkeypatch.delenv("CROSSMODAL_MODEL_SPEC", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["demo", "--data", "emoji", "--houses", "google", "--no-serve"])
        assert result.exit_code == 0, result.output
        settings = get_settings()
    finally:
        get_settings.cache_clear()
    assert EMOJI_QUERIES[0] == "a cat"
    with TestClient(create_app(settings)) as client:
        resp = client.post("/v1/search/text", json={"query": "a cat", "target": "image", "k": 5})
        assert resp.status_code == 200, resp.text
        hits = resp.json()["data"]
    assert len(hits) == 5 and all(h["metadata"]["house"] == "google" for h in hits)
    assert "cat" in hits[0]["text"].split(), [h["text"] for h in hits]
