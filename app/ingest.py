"""``crossmodal ingest``: source -> item rows -> embedding shards -> exact FAISS index per modality.

Each stage is restartable: items are upserted by external id, embedding
covers every live item that has no vector yet for the active model (so a
crash mid-way is finished by the next run), and the index is rebuilt from
the shards and published under a fresh folder before the DB points at it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker
from tqdm.auto import tqdm

from app.config import Settings
from app.db import crud
from app.db.models import Item, Model
from index import flat, shards
from index.embed import embed_sharded
from training.sources import Record, SourceReport, iter_source

log = logging.getLogger(__name__)

MODALITIES = ("image", "text")


@dataclass
class IngestReport:
    source: str
    read: int = 0
    added: int = 0
    already_present: int = 0
    skipped: Counter = field(default_factory=Counter)
    failed_images: dict[str, str] = field(default_factory=dict)  # external id -> reason
    embedded: dict[str, int] = field(default_factory=dict)
    indexes: dict[str, int] = field(default_factory=dict)
    model_id: int | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"source:           {self.source}",
            f"rows read:        {self.read}",
            f"items added:      {self.added}",
            f"already present:  {self.already_present}",
        ]
        for reason, n in sorted(self.skipped.items()):
            lines.append(f"skipped ({reason}): {n}")
        if self.failed_images:
            lines.append(f"unreadable images (items removed): {len(self.failed_images)}")
            for ext_id, reason in list(self.failed_images.items())[:10]:
                lines.append(f"  - {ext_id}: {reason}")
        for modality, n in self.embedded.items():
            lines.append(f"{modality} embeddings added: {n}")
        for modality, idx in self.indexes.items():
            lines.append(f"{modality} index published: #{idx}")
        lines.append(f"model: #{self.model_id}   took {self.seconds:.1f}s")
        return "\n".join(lines)


def _chunks(it: Iterable, n: int) -> Iterator[list]:
    it = iter(it)
    while chunk := list(islice(it, n)):
        yield chunk


def ensure_active_model(session: Session, settings: Settings) -> Model:
    """The DB's active model; on a fresh DB, register ``settings.model_spec`` as active."""
    model = crud.get_active_model(session)
    if model is None:
        model = crud.create_model(session, settings.model_spec, name="default")
        session.flush()
        model = crud.activate_model(session, model.id)
        session.commit()
    return model


def add_records(session_factory: sessionmaker, records: Iterable[Record], report: IngestReport) -> None:
    for chunk in _chunks(records, 1000):
        with session_factory() as session:
            new_ids, skipped = crud.add_items(
                session,
                [
                    crud.NewItem(
                        external_id=r.external_id,
                        source=report.source,
                        image_path=r.image_path,
                        text=r.text,
                        metadata=r.metadata or None,
                    )
                    for r in chunk
                ],
            )
            session.commit()
        report.added += len(new_ids)
        report.already_present += skipped


def _pending(session: Session, modality: str, done: np.ndarray) -> list[tuple[int, str]]:
    pending = []
    for batch in crud.iter_item_batches(session, 5000, modality=modality):
        ids = np.fromiter((it.id for it in batch), dtype=np.int64, count=len(batch))
        todo = ~np.isin(ids, done, assume_unique=True)
        for it, need in zip(batch, todo, strict=True):
            if need:
                pending.append((it.id, it.image_path if modality == "image" else it.text))
    return pending


def _bar(desc: str, enabled: bool):
    bar = tqdm(desc=desc, unit="item", disable=not enabled, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return bar, update


def embed_pending(
    session_factory: sessionmaker,
    encoder,
    model: Model,
    settings: Settings,
    report: IngestReport,
    show_progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> None:
    """Embed every live item of each modality that has no vector yet for ``model``.

    The pending items are cut into shards by id range (``index.embed.plan_shards``), so a
    restart skips finished shards and ``world_size`` torchrun ranks split the work.
    """
    for modality in MODALITIES:
        out_dir = embeddings_dir(settings, model.id, modality)
        with session_factory() as session:
            pending = _pending(session, modality, shards.embedded_ids(out_dir))
        if not pending:
            report.embedded[modality] = 0
            continue
        bar, update = _bar(f"embed {modality}s", show_progress and rank == 0)
        with bar:
            result = embed_sharded(
                encoder,
                pending,
                out_dir,
                modality,
                rank=rank,
                world_size=world_size,
                batch_size=settings.batch_size,
                num_workers=settings.num_workers if modality == "image" else 0,
                progress=update,
            )
        report.embedded[modality] = result.embedded
        if result.failed:
            _remove_unreadable(session_factory, result.failed, report)


def _remove_unreadable(session_factory: sessionmaker, failed: dict[int, str], report: IngestReport):
    # Remove the row outright so that a fixed file is picked up by the next ingest.
    with session_factory() as session:
        rows = session.execute(select(Item.id, Item.external_id).where(Item.id.in_(list(failed))))
        for item_id, ext_id in rows:
            report.failed_images[ext_id] = failed[item_id]
        session.execute(delete(Item).where(Item.id.in_(list(failed))))
        session.commit()


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
    session_factory: sessionmaker, model: Model, settings: Settings, report: IngestReport, force=False
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


def ingest(
    source: str | Path,
    settings: Settings,
    session_factory: sessionmaker,
    encoder=None,
    show_progress: bool = True,
) -> IngestReport:
    """Ingest ``source`` for the active model and publish fresh indexes. Never stops on bad rows."""
    t0 = time.perf_counter()
    report = IngestReport(source=str(Path(source).expanduser().resolve()))
    source_report = SourceReport()
    add_records(session_factory, iter_source(source, source_report), report)
    report.read = source_report.read
    report.skipped.update(source_report.skipped)
    with session_factory() as session:
        model = ensure_active_model(session, settings)
    report.model_id = model.id
    if encoder is None:
        from training.encoder import Encoder

        encoder = Encoder.from_spec(model.spec, device=settings.device, batch_size=settings.batch_size)
    embed_pending(session_factory, encoder, model, settings, report, show_progress)
    publish_indexes(session_factory, model, settings, report)
    report.seconds = time.perf_counter() - t0
    return report
