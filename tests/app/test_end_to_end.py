"""Synthetic data -> bootstrap builtin:lit-mini -> ingest -> HTTP search, with a recall floor.

The real offline model (packaged EfficientNet-Lite0 + MiniLM weights) gets its
projection heads trained on the train split; held-out test captions must then
find their own image through the HTTP API far more often than chance.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.db import crud
from app.db.session import make_engine, make_session_factory, upgrade
from app.ingest import ingest
from app.main import create_app
from app.models_admin import bootstrap_model
from tests.app.conftest import make_settings
from training.bootstrap import BootstrapConfig
from training.synthetic import generate_dataset

N = 400
RECALL_AT_5_FLOOR = 0.6  # chance is 5/400 = 0.0125


@pytest.mark.slow
def test_held_out_captions_find_their_own_image(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    sf = make_session_factory(make_engine(url))
    settings = make_settings(tmp_path, url, model_spec="builtin:lit-mini", num_workers=1)
    ds = generate_dataset(tmp_path / "synthetic", n=N, seed=0)

    model = bootstrap_model(settings, sf, ds.manifest, cfg=BootstrapConfig(num_workers=1), show_progress=False)
    assert model.spec.startswith("builtin:lit-mini@") and model.status == "active"
    assert model.eval_report["held_out"]["t2i_R@5"] >= RECALL_AT_5_FLOOR

    report = ingest(ds.manifest, settings, sf)
    assert report.added == N and report.model_id == model.id

    test_rows = ds.rows("test")
    with sf() as s:
        by_external = {item.external_id: item.id for batch in crud.iter_item_batches(s, 1000) for item in batch}
    hits = 0
    with TestClient(create_app(settings)) as client:
        for row in test_rows:
            resp = client.post("/v1/search/text", json={"query": row["text"], "target": "image", "k": 5})
            assert resp.status_code == 200, resp.text
            hits += by_external[row["id"]] in {h["id"] for h in resp.json()["data"]}
        # and the reverse direction: an image query finds its own caption's text
        image = (ds.root / test_rows[0]["image"]).read_bytes()
        resp = client.post(
            "/v1/search/image", files={"file": ("q.png", image, "image/png")}, data={"target": "text", "k": 5}
        )
        assert test_rows[0]["text"] in {h["text"] for h in resp.json()["data"]}
    recall = hits / len(test_rows)
    assert recall >= RECALL_AT_5_FLOOR, f"text->image R@5 {recall:.2f} below {RECALL_AT_5_FLOOR}"
