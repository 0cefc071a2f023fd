"""Each model's relevance calibration: fitted on its evaluation pairs, stored on its row, refitted when
that set changes or the model is promoted, never failing the work that asked for it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from app.db import crud
from app.db.models import Model
from app.pipelines import calibration as pc
from app.pipelines.ingest import ingest
from app.pipelines.publish import embeddings_dir
from app.serving.relevance import load_relevance
from index import shards
from tests.helpers.service import stack
from training import calibration as cal
from training.synthetic.shapes import generate_dataset


def _stored(sf, model_id: int | None = None) -> dict:
    with sf() as session:
        model = session.get(Model, model_id) if model_id else crud.get_active_model(session)
        return dict(model.calibration or {})


@pytest.fixture
def big(tmp_path, db_url):
    """400 synthetic pairs ingested (about 40 held out by the stable hash) on SQLite and PostgreSQL."""
    with stack(tmp_path, db_url, n=400) as s:
        yield s


def _same_fit(stored: dict, direction: cal.Direction, method: str) -> None:
    """The stored direction is what fitting ``direction`` gives: the same map, or the same refusal. (test:tiny
    is a random model: whether relevance rises with its cosines is chance for text and image, while the
    images of one caption are near copies, so image -> image always has something to fit.)"""
    try:
        expected, _ = cal.fit(cal.judge(direction), method)
    except ValueError as e:
        assert stored is None, f"fitted where a fit is refused: {e}"
        return
    got = cal.Calibration.from_json(stored["map"])
    assert got.method == expected.method and got.beta == pytest.approx(expected.beta, abs=1e-9)
    probes = np.linspace(-1, 1, 201)
    np.testing.assert_allclose(got(probes, 0.5), expected(probes, 0.5), atol=1e-9)


def test_ingest_calibrates_the_active_model_on_the_held_out_items_against_the_collection(big):
    record = _stored(big.session_factory)
    assert record["dataset"] == "db" and record["pool"] == "collection"
    db = pc.db_set(big.session_factory)
    assert record["pairs"] == len(db.pairs) >= 20
    ids, x = shards.load_all(embeddings_dir(big.settings, 1, "image"))
    text_ids, tx = shards.load_all(embeddings_dir(big.settings, 1, "text"))
    assert (ids == text_ids).all()  # every synthetic item has both
    with big.session_factory() as session:
        text_of = {i.id: i.text for b in crud.iter_item_batches(session, 1000) for i in b}
    row = {int(i): r for r, i in enumerate(ids)}
    pool_keys = [frozenset([text_of[int(i)]]) for i in ids]
    first: dict[str, int] = {}  # one text query per distinct held-out caption
    for i in db.ids:
        first.setdefault(text_of[i], i)
    t2i = cal.Direction(tx[[row[i] for i in first.values()]], [frozenset([t]) for t in first], x, pool_keys)
    i2i = cal.Direction(x[[row[i] for i in db.ids]], [frozenset([text_of[i]]) for i in db.ids], x, pool_keys,
                        np.array([row[i] for i in db.ids]))  # fmt: skip
    method = big.settings.calibration_method
    _same_fit(record["directions"].get("text->image"), t2i, method)
    _same_fit(record["directions"].get("image->image"), i2i, method)
    assert record["status"] == "fitted" and record["directions"]["image->image"]["pool"] == 400
    assert set(record["directions"]) | set(record["reasons"]) == set(cal.DIRECTIONS)
    assert set(load_relevance(record).maps) == set(record["directions"])


def test_it_is_refitted_only_when_the_evaluation_set_changes(big):
    settings, sf = big.settings, big.session_factory
    before = _stored(sf)
    again = pc.ensure_calibration(settings, sf, 1)
    assert again["fitted_at"] == before["fitted_at"]  # same held-out pairs: left alone
    more = generate_dataset(settings.data_dir / "more", n=120, seed=7, image_size=32)
    manifest = settings.data_dir / "more.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"more-{r['id']}", "image": str(more.root / r["image"]),
                                            "text": r["text"]}) + "\n" for r in more.rows()))  # fmt: skip
    assert ingest(manifest, settings, sf).added == 120
    after = _stored(sf)
    assert after["fingerprint"] != before["fingerprint"] and after["fitted_at"] != before["fitted_at"]
    assert after["pairs"] > before["pairs"]
    with sf() as session:  # a held-out item deleted: the set changed again
        gone = pc.db_set(sf).ids[0]
        crud.soft_delete_items(session, ids=[gone])
        session.commit()
    assert pc.ensure_calibration(settings, sf, 1)["fingerprint"] != after["fingerprint"]


def test_a_promotion_refits_on_its_own_set_and_a_missing_set_keeps_the_last_fit(big, tmp_path):
    settings, sf = big.settings, big.session_factory
    manifest = tmp_path / "eval.jsonl"
    ds = generate_dataset(tmp_path / "eval", n=150, seed=3, image_size=32)
    rows = [
        {"image": str((ds.root / r["image"]).resolve()), "text": r["text"], "split": r["split"], "concept": r["shape"]}
        for r in ds.rows()
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    record = pc.ensure_calibration(settings, sf, 1, dataset=str(manifest), split="train", force=True)
    assert record["dataset"] == str(manifest) and record["split"] == "train" and record["pool"] == "pairs"
    assert set(record["directions"]) | set(record["reasons"]) == set(cal.DIRECTIONS)
    assert record["directions"]["image->image"]["queries"] > 100  # concept = shape: every image has siblings
    assert pc.ensure_calibration(settings, sf, 1)["fitted_at"] == record["fitted_at"]  # its set: unchanged
    forced = pc.ensure_calibration(settings, sf, 1, dataset=str(manifest), split="train", force=True)
    assert forced["fitted_at"] != record["fitted_at"]  # a promotion refits whatever the fingerprint
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows[:-5]))
    edited = pc.ensure_calibration(settings, sf, 1)
    assert edited["fingerprint"] != forced["fingerprint"] and edited["pairs"] < forced["pairs"]
    manifest.unlink()
    assert pc.ensure_calibration(settings, sf, 1) == edited  # gone: the last fit keeps serving
    back = pc.ensure_calibration(settings, sf, 1, dataset="db", force=True)
    assert back["dataset"] == "db" and back["pool"] == "collection" and back["status"] == "fitted"


def test_a_set_too_small_is_recorded_as_unavailable_with_the_reason(tmp_path):
    with stack(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", n=30) as s:
        record = _stored(s.session_factory)
    assert record["status"] == "unavailable" and not record["directions"]
    why = record["reasons"].get("text->image") or record["reasons"]["*"]
    assert "calibration needs at least" in why or "no image-text pairs" in why  # about 3 held out, maybe none
    mapping, said = load_relevance(record).mapping("text", "image")
    assert mapping is None and said == why


def test_a_synthetic_folder_is_read_through_its_manifest(tmp_path):
    ds = generate_dataset(tmp_path / "ds", n=40, seed=1, image_size=32)
    pairs = pc.manifest_set(str(ds.root), "test")
    with open(ds.manifest) as f:
        assert len(pairs) == sum(r["split"] == "test" for r in csv.DictReader(f)) > 0


def test_a_failure_is_recorded_and_never_raised(big, monkeypatch):
    settings, sf = big.settings, big.session_factory

    def broken(*args, **kwargs):
        raise RuntimeError("the GPU caught fire")

    monkeypatch.setattr(pc, "collection_directions", broken)
    record = pc.ensure_calibration(settings, sf, 1, force=True)
    assert record["status"] == "unavailable" and "the GPU caught fire" in record["reasons"]["*"]


def test_large_sets_are_sampled_by_a_stable_hash():
    keys = [f"k{i}" for i in range(50)]
    picked = pc._sample(keys, 10)
    assert len(picked) == 10 and picked == sorted(picked) and picked == pc._sample(keys, 10)
    grown = pc._sample([*keys, "k50", "k51"], 10)  # a new row enters only by displacing one: most stay
    assert len(set(grown) & set(picked)) >= 8


def test_a_bootstrapped_model_is_calibrated_on_the_pairs_it_was_evaluated_on(tmp_path, monkeypatch):
    from app.pipelines import bootstrap
    from app.pipelines.bootstrap import bootstrap_model
    from training.bootstrap import BootstrapConfig

    # test:tiny has no projection heads to train: the registration after training is what is under test
    monkeypatch.setattr(bootstrap, "bootstrap_heads", lambda *args, **kwargs: {"skipped": True})
    ds = generate_dataset(tmp_path / "ds", n=200, seed=2, image_size=32)
    with stack(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", n=0) as s:
        row = bootstrap_model(s.settings, s.session_factory, ds.manifest, "test:tiny",
                              BootstrapConfig(epochs=1, num_workers=0), show_progress=False)  # fmt: skip
        stored = _stored(s.session_factory, row.id)
    assert stored == row.calibration and stored["dataset"] == str(ds.manifest.resolve()) and stored["split"] == "test"
    assert stored["pairs"] == 20 and stored["pool"] == "pairs"  # the 10% test split; nothing is ingested yet
    fitting = {"method": "platt", "depth": cal.DEPTH, "pool": "pairs"}
    assert stored["fingerprint"] == cal.fingerprint(pc.manifest_set(stored["dataset"], "test"), fitting)
    assert set(stored["directions"]) | set(stored["reasons"]) == set(cal.DIRECTIONS)
