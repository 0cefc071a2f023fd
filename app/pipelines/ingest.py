"""``crossmodal ingest``: source -> item rows -> embedding shards -> a published index per modality.

Each stage is restartable: items are upserted by external id, embedding
covers every live item that has no vector yet for the active model, in shards
a restart skips (so a crash mid-way is finished by the next run), and index
versions are published under fresh folders before the DB points at them
(``app.pipelines.publish``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import crud
from app.db.models import Item, Model
from app.encoders import load_encoder
from app.pipelines.calibration import ensure_calibration
from app.pipelines.publish import embeddings_dir, publish_indexes
from app.progress import Reporter, quiet
from crossmodal_kernel.modality import MODALITIES
from index import shards
from index.embed import embed_sharded
from training.sources import Record, SourceReport, iter_source

log = logging.getLogger(__name__)


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

    def as_dict(self) -> dict:
        """JSON-ready (a job's result)."""
        return {**asdict(self), "skipped": dict(self.skipped)}

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


def add_records(
    session_factory: sessionmaker, records: Iterable[Record], report: IngestReport, progress: Reporter = quiet
) -> None:
    """Upsert records 1,000 to a transaction: a crash loses at most the chunk in flight."""
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
        progress("read rows", report.added + report.already_present, None, unit="rows")


def _pending(session: Session, modality: str, done: np.ndarray) -> list[tuple[int, str]]:
    pending = []
    for batch in crud.iter_item_batches(session, 5000, modality=modality):
        ids = np.fromiter((it.id for it in batch), dtype=np.int64, count=len(batch))
        todo = ~np.isin(ids, done, assume_unique=True)
        for it, need in zip(batch, todo, strict=True):
            if need:
                value = it.image_path if modality == "image" else it.text
                assert value is not None  # iter_item_batches(modality=...) yields only items that have it
                pending.append((it.id, value))
    return pending


def embed_pending(
    session_factory: sessionmaker,
    encoder,
    model: Model,
    settings: Settings,
    report: IngestReport,
    progress: Reporter = quiet,
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
        stage = f"embed {modality}s"

        def embedded(done: int, total: int, stage: str = stage) -> None:
            if rank == 0:
                progress(stage, done, total)

        result = embed_sharded(
            encoder,
            pending,
            out_dir,
            modality,
            rank=rank,
            world_size=world_size,
            num_workers=settings.num_workers if modality == "image" else 0,
            progress=embedded,
        )
        report.embedded[modality] = result.embedded
        if result.failed:
            _remove_unreadable(session_factory, result.failed, report)


def embed_and_publish(
    session_factory: sessionmaker,
    settings: Settings,
    model: Model,
    *,
    source: str,
    rebuild: bool = False,
    encoder=None,
    progress: Reporter = quiet,
) -> IngestReport:
    """Embed every live item that ``model`` has no vector for (resuming from finished shards), and
    publish its indexes (all of them rebuilt if ``rebuild``). ``source`` names the work in the report."""
    report = IngestReport(source=source, model_id=model.id)
    if encoder is None:
        encoder = load_encoder(settings, model.spec)
    embed_pending(session_factory, encoder, model, settings, report, progress)
    report.indexes = publish_indexes(session_factory, model, settings, force=rebuild, progress=progress)
    return report


def _remove_unreadable(session_factory: sessionmaker, failed: dict[int, str], report: IngestReport):
    # Remove the row outright so that a fixed file is picked up by the next ingest.
    with session_factory() as session:
        rows = session.execute(select(Item.id, Item.external_id).where(Item.id.in_(list(failed))))
        for item_id, ext_id in rows:
            report.failed_images[ext_id] = failed[item_id]
        session.execute(delete(Item).where(Item.id.in_(list(failed))))
        session.commit()


def ingest(
    source: str | Path,
    settings: Settings,
    session_factory: sessionmaker,
    encoder=None,
    progress: Reporter = quiet,
) -> IngestReport:
    """Ingest ``source`` for the active model and publish fresh indexes. Never stops on bad rows.

    ``progress`` hears about every stage (rows, embedding, index builds); a job's reporter raises
    there when the job is cancelled, which stops the ingest with everything committed so far kept.
    """
    t0 = time.perf_counter()
    report = IngestReport(source=str(Path(source).expanduser().resolve()))
    source_report = SourceReport()
    add_records(session_factory, iter_source(source, source_report), report, progress)
    report.read = source_report.read
    report.skipped.update(source_report.skipped)
    with session_factory() as session:
        model = ensure_active_model(session, settings)
    report.model_id = model.id
    if encoder is None:
        encoder = load_encoder(settings, model.spec)
    embed_pending(session_factory, encoder, model, settings, report, progress)
    report.indexes = publish_indexes(session_factory, model, settings, progress=progress)
    recalibrate(settings, session_factory, model.id, encoder)
    report.seconds = time.perf_counter() - t0
    return report


def recalibrate(settings: Settings, session_factory: sessionmaker, model_id: int, encoder=None) -> None:
    """Refit the model's relevance calibration if its evaluation set changed (``app.pipelines.calibration``);
    a failure is logged, never raised: the items are in and the model serves, uncalibrated at worst."""
    try:
        ensure_calibration(settings, session_factory, model_id, encoder=encoder)
    except Exception:
        log.exception("could not check model %d's relevance calibration", model_id)
