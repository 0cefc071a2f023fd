"""`crossmodal demo --data emoji` on the fake emoji packages (17 concepts): the plumbing, with the real model.

The emoji set is built once into the data folder; the heads are bootstrapped on its train split;
the chosen houses' drawings are indexed, and no other source's items may join them. Whether the
real demo finds a cat for "a cat" takes minutes of real encoding on two cores, so it is not a test:
``python benchmarks/verify_demo_emoji.py`` runs it (docs/operations.md).
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import app as cli
from app.config import Settings, get_settings
from app.db import crud
from app.db.session import make_engine, make_session_factory
from app.main import create_app
from training.emoji import build_emoji_dataset

pytestmark = pytest.mark.slow  # the real default model
DEFAULT = Settings.model_fields["model_spec"].default


@pytest.fixture
def demo_env(fake_npm, tmp_path, monkeypatch):
    """The demo's settings in the environment, and the fake emoji set already in its data folder
    (the demo builds it with the real packages' pinned versions; here it finds it built)."""
    data = tmp_path / "data"
    build_emoji_dataset(data / "demo-emoji", "0", tmp_path / "cache", fake_npm.sources)
    for name, value in {"DATA_DIR": data, "DEVICE": "cpu", "NUM_WORKERS": 0, "INDEX_REFRESH_SECONDS": 0,
                        "SEARCH_MODE": "vector"}.items():  # fmt: skip
        monkeypatch.setenv(f"CROSSMODAL_{name}", str(value))
    monkeypatch.delenv("CROSSMODAL_MODEL_SPEC", raising=False)  # the default: a LiT model, which bootstraps
    get_settings.cache_clear()
    yield data
    get_settings.cache_clear()


def _demo(*args: str):
    return CliRunner().invoke(cli, ["demo", "--data", "emoji", "--no-serve", *args])


def test_the_emoji_demo_indexes_one_houses_drawings_answers_and_keeps_to_them(demo_env):
    result = _demo("--houses", "google")
    assert result.exit_code == 0, result.output
    assert f"bootstrapping {DEFAULT}" in result.output
    drawn = [
        json.loads(line)
        for name in ("trainval", "heldout_concepts", "heldout_house", "heldout_both")
        for line in (demo_env / "demo-emoji" / f"{name}.jsonl").read_text().splitlines()
    ]
    google = {r["image"] for r in drawn if r["house"] == "google"}
    settings = get_settings()
    with TestClient(create_app(settings)) as client:
        resp = client.post("/v1/search/text", json={"query": "a cat", "target": "image", "k": 100})
        assert resp.status_code == 200, resp.text
        hits = resp.json()["data"]
    assert len(hits) == len(google) and {h["metadata"]["house"] for h in hits} == {"google"}
    engine = make_engine(settings.resolved_database_url)
    with make_session_factory(engine)() as session:
        model = crud.get_active_model(session)
        assert model is not None and model.spec.startswith(f"{DEFAULT}@") and "on trainval.jsonl" in (model.name or "")
    engine.dispose()

    again = _demo("--houses", "google")  # a second run reuses the set, the model and the items
    assert again.exit_code == 0, again.output
    assert "reusing model" in again.output and "fetching" not in again.output
    other = _demo("--houses", "apple")  # one demo a database: apple's drawings would mix with google's
    assert other.exit_code != 0 and "already holds" in other.output


def test_an_unknown_house_is_refused(demo_env):
    result = _demo("--houses", "nobody")
    assert result.exit_code != 0 and "choose among apple, google, twitter, facebook" in result.output
