"""Model steps the CLI and the admin jobs share: bootstrapping the offline model, exporting the DB as pairs."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from app.config import Settings
from app.db import crud
from app.db.models import Model
from app.encoders import wrap_encoder
from app.pipelines.calibration import ensure_calibration
from app.progress import Bars
from crossmodal_kernel.atomic import atomic_path
from training import eval_sets
from training.bootstrap import BootstrapConfig, bootstrap_heads
from training.sources import SourceReport, iter_manifest

log = logging.getLogger(__name__)


def manifest_pairs(manifest: Path, split: str | None) -> tuple[list[tuple[str, str]], list[tuple[str, ...]]]:
    """``(image path, caption)`` pairs of a manifest, optionally one ``split`` column value, and each
    pair's further captions (its ``captions`` column; empty without one)."""
    pairs, captions = [], []
    for rec in iter_manifest(Path(manifest), SourceReport()):
        text = rec.text or (rec.captions[0] if rec.captions else None)
        if rec.image_path and text and (split is None or rec.metadata.get("split") == split):
            pairs.append((rec.image_path, text))
            captions.append(tuple(rec.captions))
    return pairs, captions


def export_pairs(session_factory: sessionmaker, out: Path) -> int:
    """Write every live item that has both an image and a text as a JSONL training manifest."""
    import json

    from app.db import crud

    n = 0
    with session_factory() as session, atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for batch in crud.iter_item_batches(session, 5000):
            for item in batch:
                if item.image_path and item.text:
                    row = {**(item.meta or {}), "id": item.external_id, "image": item.image_path, "text": item.text}
                    f.write(json.dumps(row) + "\n")
                    n += 1
    return n


def bootstrap_model(
    settings: Settings,
    session_factory: sessionmaker,
    manifest: Path,
    base_spec: str | None = None,
    cfg: BootstrapConfig | None = None,
    activate: bool = True,
    show_progress: bool = True,
) -> Model:
    """Train ``base_spec``'s (default: the configured model's) projection heads on the manifest's
    train split, every caption of a row with a ``captions`` column, and register the result."""
    from crossmodal_kernel.checkpoints import save_checkpoint
    from crossmodal_kernel.loading import load_model

    base_spec = base_spec or settings.model_spec
    train, captions = manifest_pairs(manifest, "train")
    held_out_split = "test" if len(eval_sets.manifest_pairs(manifest, "test")) else "val"
    held_out = eval_sets.manifest_pairs(manifest, held_out_split)
    if not train:
        raise ValueError(f"{manifest} has no rows with split=train, an image and a text")
    cfg = cfg or BootstrapConfig(num_workers=settings.num_workers)
    loaded = load_model(base_spec, settings.device)
    with Bars(enabled=show_progress) as progress:
        train_report = bootstrap_heads(loaded, train, cfg, progress, captions if any(captions) else None)
    encoder = wrap_encoder(settings, loaded)
    eval_report = eval_sets.evaluate_pairs(encoder, held_out) if len(held_out) else {}
    with session_factory() as session:
        row = crud.create_model(
            session,
            base_spec,
            name=f"{base_spec} bootstrapped on {Path(manifest).name}",
            eval_report={"bootstrap": train_report, "held_out": eval_report},
        )
        session.flush()
        ckpt = save_checkpoint(loaded, settings.data_dir / "models" / str(row.id) / "checkpoint.pt")
        row.checkpoint_path = str(ckpt.resolve())
        row.spec = f"{base_spec}@{row.checkpoint_path}"
        if activate:
            crud.activate_model(session, row.id)
        session.commit()
    # relevance, calibrated on the pairs it was just evaluated on
    row.calibration = ensure_calibration(settings, session_factory, row.id, dataset=str(Path(manifest).resolve()),
                                         split=held_out_split, encoder=encoder)  # fmt: skip
    return row
