"""Each model version's relevance calibration: which evaluation pairs it is fitted on, when, and where it is kept.

The map itself (cosine -> P(relevant), per query direction) is :mod:`training.calibration`'s; this
module keeps one per model on ``models.calibration`` (migration 0005), as JSON with the evaluation
set it was fitted on and that set's fingerprint. The set is the model's own evaluation pairs:

- a bootstrapped model: its manifest's held-out split, the pairs bootstrap evaluates it on;
- a promoted model: the promotion's evaluation set (``db`` unless the job names another), refitted
  at every promotion;
- any other (the base model the first ingest registers, a fine-tuned candidate): ``db``, the
  database's held-out split (the trainer's stable hash split). A concept per item (a ``concept``
  metadata value on every held-out item) applies the concept hit rule, as a manifest column does.

:func:`ensure_calibration` refits when the set's fingerprint changed (new held-out items, an edited
manifest) and otherwise leaves the row alone; ingests call it for the active model after
publishing. A set too small to fit (or gone) is recorded as ``unavailable`` with the reason, which
searches then report beside ``relevance: null``. A calibration failure never fails the work that
asked for it: the model serves, uncalibrated, and the reason says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import sessionmaker

from app.config import Settings
from app.db import crud
from app.db.models import Model
from app.encoders import load_encoder
from app.pipelines.evaluation import DB, HELD_OUT_FRACTION
from crossmodal_kernel.images import open_image
from index import shards
from training import calibration as cal
from training.calibration_sets import direction_sets
from training.eval_sets import CONCEPT_COLUMN, EvalPairs, manifest_pairs
from training.pairs import stable_fraction

log = logging.getLogger(__name__)

MAX_PAIRS = 2000  # a larger set is sampled by the pairs' stable hash, so that refits stay cheap


def _sample(keys: list[str], limit: int = MAX_PAIRS) -> list[int]:
    """Which rows to keep: all of them, or the ``limit`` with the smallest stable hash (in row order)."""
    if len(keys) <= limit:
        return list(range(len(keys)))
    ranked = sorted(range(len(keys)), key=lambda i: stable_fraction("calibration\0" + keys[i]))
    return sorted(ranked[:limit])


@dataclass
class DbSet:
    """The database as an evaluation set: its held-out image-text items (the pairs, sampled, and their
    ids), and every live item's id, modalities and key (its concept, or its text without concepts)."""

    pairs: EvalPairs
    ids: list[int]
    items: list[tuple[int, bool, bool, str | None]] = field(default_factory=list)  # id, image, text, key


def db_set(session_factory: sessionmaker, fraction: float = HELD_OUT_FRACTION) -> DbSet:
    rows: list[tuple[int, str, str, Any]] = []
    items: list[tuple[int, bool, bool, Any, str | None]] = []
    with session_factory() as session:
        for batch in crud.iter_item_batches(session, 5000):
            for item in batch:
                concept = (item.meta or {}).get(CONCEPT_COLUMN)
                items.append((item.id, bool(item.image_path), bool(item.text), concept, item.text))
                if item.image_path and item.text and stable_fraction(f"{item.image_path}\0{item.text}") < fraction:
                    rows.append((item.id, item.image_path, item.text, concept))
    rows = [rows[i] for i in _sample([f"{p}\0{t}" for _, p, t, _ in rows])]
    grouped = bool(rows) and all(c not in (None, "") for *_, c in rows)
    pairs = EvalPairs([p for _, p, _, _ in rows], [t for _, _, t, _ in rows],
                      concepts=[str(c) for *_, c in rows] if grouped else None,
                      captions=[()] * len(rows) if grouped else None)  # fmt: skip
    keyed = [(i, im, tx, (None if c in (None, "") else str(c)) if grouped else t) for i, im, tx, c, t in items]
    return DbSet(pairs, [i for i, *_ in rows], keyed)


def manifest_set(path: str, split: str | None) -> EvalPairs:
    """A manifest's rows of ``split`` (a synthetic dataset folder: its ``manifest.csv``), sampled."""
    source = Path(path)
    pairs = manifest_pairs(source / "manifest.csv" if source.is_dir() else source, split)
    keep = _sample([f"{p}\0{t}" for p, t in zip(pairs.images, pairs.texts, strict=True)])
    if len(keep) == len(pairs):
        return pairs
    return EvalPairs([pairs.images[i] for i in keep], [pairs.texts[i] for i in keep],
                     concepts=None if pairs.concepts is None else [pairs.concepts[i] for i in keep],
                     captions=None if pairs.captions is None else [pairs.captions[i] for i in keep])  # fmt: skip


class _Vectors:
    """Embeddings of a set's images and texts: encoded with the model's encoder (loaded once, on first need)."""

    def __init__(self, settings: Settings, spec: str, encoder=None):
        self.settings, self.spec, self._encoder = settings, spec, encoder

    def encoder(self):
        if self._encoder is None:
            self._encoder = load_encoder(self.settings, self.spec)
        return self._encoder

    def images(self, paths: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(paths), 64):
            out.append(self.encoder().encode_images([open_image(p) for p in paths[start : start + 64]]))
        return np.concatenate(out).astype(np.float32)

    def texts(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.encoder().encode_texts(texts), dtype=np.float32)


def collection_directions(settings: Settings, model_id: int, db: DbSet) -> dict[str, cal.Direction] | None:
    """The db set's directions with the whole collection as the pool, from the model's stored item vectors:
    the held-out items are the queries, ranked against every live item as a search ranks them. None when
    the model has not embedded the held-out items (a candidate not yet promoted): then the pairs alone."""
    root = settings.data_dir / "embeddings" / str(model_id)
    stored = {m: shards.load_all(root / m) for m in ("image", "text")}
    rows = {m: {int(i): r for r, i in enumerate(ids.tolist())} for m, (ids, _) in stored.items()}
    if not db.ids or not all(i in rows["image"] and i in rows["text"] for i in db.ids):
        return None
    pools: dict[str, tuple[list[int], np.ndarray, list[frozenset]]] = {}
    for m, has in (("image", 1), ("text", 2)):
        live = [(item[0], item[3]) for item in db.items if item[has] and item[0] in rows[m]]
        vectors = stored[m][1][[rows[m][i] for i, _ in live]]
        pools[m] = ([i for i, _ in live], vectors, [frozenset() if k is None else frozenset([k]) for _, k in live])
    key_of = {i: k for i, _, _, k in db.items}
    first: dict[str | None, int] = {}  # one text query per key: its first held-out item
    for i in db.ids:
        first.setdefault(key_of[i], i)
    at = {m: {i: r for r, i in enumerate(pools[m][0])} for m in pools}
    text_q = [i for i in first.values()]
    image_q = list(db.ids)
    text_vec = pools["text"][1][[at["text"][i] for i in text_q]]
    image_vec = pools["image"][1][[at["image"][i] for i in image_q]]
    text_keys = [frozenset([key_of[i]]) for i in text_q]
    image_keys = [frozenset([key_of[i]]) for i in image_q]
    return {
        cal.TEXT_TO_IMAGE: cal.Direction(text_vec, text_keys, pools["image"][1], pools["image"][2]),
        cal.IMAGE_TO_TEXT: cal.Direction(image_vec, image_keys, pools["text"][1], pools["text"][2]),
        cal.IMAGE_TO_IMAGE: cal.Direction(image_vec, image_keys, pools["image"][1], pools["image"][2],
                                          np.array([at["image"][i] for i in image_q])),
        cal.TEXT_TO_TEXT: cal.Direction(text_vec, text_keys, pools["text"][1], pools["text"][2],
                                        np.array([at["text"][i] for i in text_q])),
    }  # fmt: skip


def fit_directions(directions: dict[str, cal.Direction], method: str, depth: int = cal.DEPTH) -> dict[str, Any]:
    """``directions`` (each fitted map and what it was fitted on) and ``reasons`` (why a direction has none)."""
    fitted: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    for name, direction in directions.items():
        judged = cal.judge(direction.pick(cal.sample_queries(len(direction.queries))), depth)
        try:
            mapping, stats = cal.fit(judged, method)
        except ValueError as e:
            reasons[name] = str(e)
            continue
        fitted[name] = {"map": mapping.as_json(), "pool": len(direction.pool), **stats}
    return {"directions": fitted, "reasons": reasons}


def ensure_calibration(
    settings: Settings,
    session_factory: sessionmaker,
    model_id: int,
    *,
    dataset: str | None = None,
    split: str | None = None,
    encoder=None,
    force: bool = False,
) -> dict[str, Any]:
    """The model's calibration, refitted first when ``force``, when ``dataset`` names another set than the
    stored one, or when the set's fingerprint changed. Never raises for the set or the fit: the reason
    is recorded instead (``status: unavailable``) and the model serves uncalibrated."""
    with session_factory() as session:
        model = session.get(Model, model_id)
        if model is None:
            raise LookupError(f"no model {model_id}")
        current, spec = dict(model.calibration or {}), model.spec
        indexed = bool(crud.get_active_indexes(session, model_id))  # it has embedded the collection
    if dataset is None:
        dataset, split = current.get("dataset") or DB, current.get("split")
    record: dict[str, Any] = {"version": cal.VERSION, "dataset": dataset, "split": split,
                              "method": settings.calibration_method, "depth": cal.DEPTH,
                              "pool": "collection" if dataset == DB and indexed else "pairs"}  # fmt: skip
    try:
        db = db_set(session_factory) if dataset == DB else None
        pairs = db.pairs if db is not None else manifest_set(dataset, split)
    except (OSError, ValueError) as e:
        if current.get("status") == "fitted" and current.get("dataset") == dataset and not force:
            log.warning(
                "model %d keeps its calibration: its evaluation set %s cannot be read (%s)", model_id, dataset, e
            )
            return current
        reason = f"the evaluation set {dataset} cannot be read: {e}"
        return _save(session_factory, model_id, record | {"directions": {}, "reasons": {"*": reason}})
    record["fingerprint"] = cal.fingerprint(pairs, {k: record[k] for k in ("method", "depth", "pool")})
    if not force and current.get("fingerprint") == record["fingerprint"] and current.get("dataset") == dataset:
        return current
    try:
        directions = collection_directions(settings, model_id, db) if db is not None and indexed else None
        if directions is None:
            record["pool"] = "pairs"
            vectors = _Vectors(settings, spec, encoder)
            directions = direction_sets(pairs, vectors.images(pairs.images), vectors.texts) if len(pairs) else {}
        record |= {"pairs": len(pairs), **fit_directions(directions, record["method"])}
        if not directions:
            record["reasons"] = {"*": f"the evaluation set {dataset} has no image-text pairs"}
    except Exception as e:  # e.g. an image gone, a model that will not load: serve uncalibrated, say why
        log.exception("calibrating model %d on %s failed", model_id, dataset)
        record |= {"directions": {}, "reasons": {"*": f"calibration failed: {type(e).__name__}: {e}"}}
    return _save(session_factory, model_id, record)


def _save(session_factory: sessionmaker, model_id: int, record: dict[str, Any]) -> dict[str, Any]:
    record["status"] = "fitted" if record["directions"] else "unavailable"
    record["fitted_at"] = datetime.now(UTC).isoformat()
    with session_factory() as session:
        row = session.get(Model, model_id, with_for_update=True)
        if row is None:
            raise LookupError(f"no model {model_id}")
        row.calibration = record
        session.commit()
    log.info("model %d calibration on %s: %s", model_id, record["dataset"], _summary(record))
    return record


def _summary(record: dict[str, Any]) -> str:
    fitted = ", ".join(f"{d} (ECE {v['ece']:.3f}, {v['queries']} queries)" for d, v in record["directions"].items())
    missing = "; ".join(f"{d}: {r}" for d, r in record.get("reasons", {}).items())
    return "; ".join(x for x in (fitted, missing) if x) or record["status"]
