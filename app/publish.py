"""Publishing index versions: build (or extend) the index the settings call for, measure its
recall, write it atomically beside the old one, then point the DB at it.

Running API processes notice the new active row and swap within
``CROSSMODAL_INDEX_REFRESH_SECONDS``; the old version serves until then.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import crud
from app.db.models import Item, Model
from index import flat, shards

if TYPE_CHECKING:
    from app.ingest import IngestReport

log = logging.getLogger(__name__)

MODALITIES = ("image", "text")


def embeddings_dir(settings: Settings, model_id: int, modality: str) -> Path:
    return settings.data_dir / "embeddings" / str(model_id) / modality


def _live_ids(session: Session, modality: str) -> np.ndarray:
    column = Item.image_path if modality == "image" else Item.text
    ids = session.scalars(select(Item.id).where(Item.deleted_at.is_(None), column.is_not(None)))
    return np.fromiter(ids, dtype=np.int64)


def _tuning_queries(settings: Settings, model_id: int, modality: str, xb: np.ndarray, n: int = 500) -> np.ndarray:
    """Held-out queries for recall tuning: the other modality's vectors (the real workload
    is cross-modal), else corpus vectors with noise so that no query is its own answer."""
    rng = np.random.default_rng(0)
    other = "text" if modality == "image" else "image"
    _, xq = shards.load_all(embeddings_dir(settings, model_id, other))
    if len(xq) < 10:
        xq = xb[rng.choice(len(xb), size=min(n, len(xb)), replace=False)]
        xq = xq + rng.normal(scale=0.05, size=xq.shape).astype(np.float32)
    elif len(xq) > n:
        xq = xq[rng.choice(len(xq), size=n, replace=False)]
    return np.ascontiguousarray(xq / np.linalg.norm(xq, axis=1, keepdims=True), dtype=np.float32)


def build_for_publication(
    settings: Settings, model_id: int, modality: str, ids: np.ndarray, xb: np.ndarray
) -> tuple[object, dict]:
    """The index the settings call for, with its measured recall@10 and how it was built."""
    from index.builder import array_shards, build_index
    from index.factory import choose_index, make_plan
    from index.gpu import gpu_available
    from index.tune import exact_ground_truth, tune

    n, d = xb.shape
    gpu = gpu_available() > 0
    if settings.index_kind == "auto":
        plan = choose_index(n, d, settings.index_memory_budget_bytes, gpu=gpu)
    else:
        plan = make_plan(settings.index_kind, n, d, gpu=gpu)
    log.info("%s index for %d x %d: %s %s", modality, n, d, plan.factory, plan.reason)
    t0 = time.perf_counter()
    if plan.kind == "flat":
        index = flat.build_exact(xb, ids)
        stats = {"recall_at_10": 1.0, "exact": True}
    else:
        source = array_shards(ids, xb)
        index = build_index(source, d, plan)
        xq = _tuning_queries(settings, model_id, modality, xb)
        gt_D, gt_I = exact_ground_truth(source, xq, 10)
        result = tune(index, plan, xq, gt_I, k=10, target_recall=settings.index_target_recall, gt_D=gt_D)
        fallback_from = None
        if settings.index_kind == "auto" and plan.kind == "hnsw" and not result.reached:
            # Greedy graph search can get lost on queries far from every corpus vector (text
            # queries on an image index): measured 0.50 recall@10 at efSearch 1024 where IVF
            # reached 0.96 (docs/benchmarks.md, index-real). Try the IVF ladder; keep the better.
            alt_plan = choose_index(n, d, settings.index_memory_budget_bytes, gpu=gpu, allow_hnsw=False)
            log.warning("%s: %s missed the target (%s); trying %s", modality, plan.factory, result.note,
                        alt_plan.factory)  # fmt: skip
            alt = build_index(source, d, alt_plan)
            alt_result = tune(alt, alt_plan, xq, gt_I, k=10, target_recall=settings.index_target_recall, gt_D=gt_D)
            if alt_result.recall > result.recall:
                fallback_from = {"factory": plan.factory, "recall_at_10": result.recall, "note": result.note}
                index, plan, result = alt, alt_plan, alt_result
            del alt
        stats = {
            "recall_at_10": result.recall,
            "exact": False,
            "target_recall": result.target_recall,
            "reached": result.reached,
            "search_param": result.param,
            "search_value": result.value,
            "qps": result.qps,
            "curve": [{"value": p.value, "recall": p.recall, "qps": p.qps} for p in result.curve],
            "note": result.note,
        }
        if fallback_from is not None:
            stats["fallback_from"] = fallback_from
    stats.update(
        {"memory_bytes": plan.memory_bytes, "build_seconds": time.perf_counter() - t0, "reason": plan.reason}
    )
    return index, {"factory": plan.factory, "kind": plan.kind, **stats}


def _held_ids(index) -> np.ndarray:
    import faiss

    return faiss.vector_to_array(index.id_map).astype(np.int64)


def _remeasure(settings: Settings, model_id: int, modality: str, index, ids: np.ndarray, xb: np.ndarray) -> float:
    """Recall@10 of ``index`` (at its stored search setting) against exact search over its content."""
    from index.builder import array_shards
    from index.tune import exact_ground_truth, measure_recall

    xq = _tuning_queries(settings, model_id, modality, xb)
    gt_D, gt_I = exact_ground_truth(array_shards(ids, xb), xq, 10)
    return measure_recall(index, xq, gt_I, 10, gt_D=gt_D)


def publish_indexes(
    session_factory: sessionmaker, model: Model, settings: Settings, report: IngestReport, force: bool = False
) -> None:
    """Publish a new index version per modality whose content changed; every version states its recall.

    New items are added to a copy of the active index (no retraining). Deleted items stay
    in it as tombstones, filtered at query time, until they pass
    ``index_compact_fraction`` of it; then (or with ``force``) the index is rebuilt.
    """
    from index.builder import load_index, save_index

    for modality in MODALITIES:
        all_ids, all_xb = shards.load_all(embeddings_dir(settings, model.id, modality))
        with session_factory() as session:
            live_mask = np.isin(all_ids, _live_ids(session, modality))
            active = crud.get_active_indexes(session, model.id).get(modality)
            if not live_mask.any():
                continue
            incremental = None
            if active is not None and Path(active.path).is_dir() and not force:
                current = load_index(Path(active.path)).index
                held = _held_ids(current)
                new_mask = live_mask & ~np.isin(all_ids, held)
                tombstones = int((~np.isin(held, all_ids[live_mask])).sum())
                if tombstones <= settings.index_compact_fraction * len(held):
                    if not new_mask.any():
                        continue
                    t0 = time.perf_counter()
                    current.add_with_ids(all_xb[new_mask], all_ids[new_mask])
                    content = np.isin(all_ids, held) | new_mask
                    stats = {**(active.stats or {}), "incremental": True, "added": int(new_mask.sum()),
                             "tombstones": tombstones, "build_seconds": time.perf_counter() - t0}  # fmt: skip
                    if not stats.get("exact"):
                        stats["recall_at_10"] = _remeasure(
                            settings, model.id, modality, current, all_ids[content], all_xb[content]
                        )
                    incremental = (current, {"factory": active.factory, **stats})
            if incremental is None:
                ids, xb = all_ids[live_mask], all_xb[live_mask]
                incremental = build_for_publication(settings, model.id, modality, ids, xb)
                incremental[1].update({"incremental": False, "tombstones": 0})
            index, stats = incremental
            factory = stats.pop("factory")
            row = crud.create_index(
                session,
                model_id=model.id,
                modality=modality,
                path="",
                factory=factory,
                dim=int(all_xb.shape[1]),
                ntotal=int(index.ntotal),
                params={k: stats[k] for k in ("search_param", "search_value") if k in stats},
            )
            session.flush()
            path = settings.data_dir / "indexes" / str(row.id)
            save_index(index, path, {"index_id": row.id, "model_id": model.id, "modality": modality,
                                     "factory": factory, **stats})  # fmt: skip
            row.path = str(path.resolve())
            row.stats = stats
            crud.activate_index(session, row.id)
            session.commit()
            report.indexes[modality] = row.id


