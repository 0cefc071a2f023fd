"""`crossmodal demo` end to end: synthetic data -> bootstrap the default model -> ingest -> HTTP search.

The real offline model (packaged EfficientNet-Lite0 + MiniLM weights, the default
``CROSSMODAL_MODEL_SPEC``) gets its projection heads trained on the demo's train split; then the
demo's first example query must return its scene at rank 1, and held-out test captions must find
their own image through the HTTP API far more often than chance.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import app as cli
from app.cli.demo import DEMO_QUERY
from app.config import Settings, get_settings
from app.db import crud
from app.db.session import make_engine, make_session_factory
from app.main import create_app
from training.synthetic.shapes import load_dataset

RECALL_AT_5_FLOOR = 0.9  # chance is 5/500 (the demo draws 2000 pairs; 500 keep the test short)


def _scene(row: dict) -> tuple[str, str, str, str]:
    return row["size"], row["colour"], row["shape"], row["position"]


@pytest.mark.slow
def test_the_demo_answers_its_first_example_and_held_out_captions(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSMODAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CROSSMODAL_DEVICE", "cpu")
    monkeypatch.setenv("CROSSMODAL_NUM_WORKERS", "1")
    monkeypatch.setenv("CROSSMODAL_INDEX_REFRESH_SECONDS", "0")
    monkeypatch.delenv("CROSSMODAL_MODEL_SPEC", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["demo", "--data", "synthetic", "--n", "500", "--no-serve"])
        assert result.exit_code == 0, result.output
        settings = get_settings()
    finally:
        get_settings.cache_clear()
    default = Settings.model_fields["model_spec"].default
    ds = load_dataset(settings.data_dir / "demo")
    rows = {r["id"]: r for r in ds.rows()}
    sf = make_session_factory(engine := make_engine(settings.resolved_database_url))
    with sf() as s:
        model = crud.get_active_model(s)
        assert model is not None and model.spec.startswith(f"{default}@")
        assert model.eval_report["held_out"]["t2i_R@5"] >= RECALL_AT_5_FLOOR
        external = {item.id: item.external_id for batch in crud.iter_item_batches(s, 1000) for item in batch}
    engine.dispose()
    assert len(external) == len(rows)

    wanted = ("large", "red", "circle", "top left")
    assert DEMO_QUERY == "a large red circle in the top left" and any(_scene(r) == wanted for r in rows.values())
    with TestClient(create_app(settings)) as client:
        resp = client.post("/v1/search/text", json={"query": DEMO_QUERY, "target": "image", "k": 5})
        assert resp.status_code == 200, resp.text
        top = [_scene(rows[external[h["id"]]]) for h in resp.json()["data"]]
        assert top[0] == wanted, top

        test_rows = ds.rows("test")
        hits = 0
        for row in test_rows:
            resp = client.post("/v1/search/text", json={"query": row["text"], "target": "image", "k": 5})
            assert resp.status_code == 200, resp.text
            hits += _scene(row) in {_scene(rows[external[h["id"]]]) for h in resp.json()["data"]}
        # and the reverse direction: an image query finds its own caption's text
        image = (ds.root / test_rows[0]["image"]).read_bytes()
        resp = client.post(
            "/v1/search/image", files={"file": ("q.png", image, "image/png")}, data={"target": "text", "k": 5}
        )
        assert test_rows[0]["text"] in {h["text"] for h in resp.json()["data"]}
    recall = hits / len(test_rows)
    assert recall >= RECALL_AT_5_FLOOR, f"text->image R@5 {recall:.2f} below {RECALL_AT_5_FLOOR}"
