"""Evaluating a model on any evaluation set, and keeping the report on its row.

A dataset is named by a string: ``db`` (the database's held-out split: items with an image and a
text whose stable hash puts them in the validation share, exactly the pairs the trainer holds out
when it trains on the database), a synthetic dataset folder (``manifest.csv`` + ``hard.csv``: also
binding, a linear probe and zero-shot), or a manifest (``.csv``/``.jsonl``/``.parquet``; binding
when it has a ``distractor`` column).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import crud
from app.db.models import Model, utcnow
from app.encoders import load_encoder
from app.progress import Reporter, quiet
from training.config import DataConfig
from training.eval_sets import EvalPairs, evaluate_pairs, manifest_pairs
from training.pairs import stable_fraction

DB = "db"
HELD_OUT_FRACTION: float = DataConfig.model_fields["val_fraction"].default


def db_held_out(session_factory: sessionmaker, fraction: float = HELD_OUT_FRACTION) -> EvalPairs:
    """The held-out split of the database's image–text items (the trainer's stable hash split)."""
    images, texts = [], []
    with session_factory() as session:
        for batch in crud.iter_item_batches(session, 5000):
            for item in batch:
                if item.image_path and item.text and stable_fraction(f"{item.image_path}\0{item.text}") < fraction:
                    images.append(item.image_path)
                    texts.append(item.text)
    return EvalPairs(images, texts)


def evaluate_spec(
    settings: Settings,
    session_factory: sessionmaker | None,
    spec: str,
    dataset: str,
    split: str | None = "test",
    progress: Reporter = quiet,
) -> dict[str, Any]:
    """The report for model ``spec`` on ``dataset`` (see the module docstring); ``dataset`` is already
    checked against the allowed roots by the caller when it is a path. ``session_factory`` may be None
    unless ``dataset`` is the database."""
    encoder = load_encoder(settings, spec)
    t0 = time.perf_counter()
    stages = lambda stage, done, total: progress(stage, done, total)  # noqa: E731
    if dataset == DB:
        if session_factory is None:
            raise ValueError(f"the {DB!r} dataset needs the database")
        report = evaluate_pairs(encoder, db_held_out(session_factory), stages)
    else:
        path = Path(dataset)
        if path.is_dir():
            from training.evaluate import evaluate_synthetic
            from training.synthetic.shapes import load_dataset

            report = evaluate_synthetic(encoder, load_dataset(path), split or "test", progress=stages)
        else:
            report = evaluate_pairs(encoder, manifest_pairs(path, split), stages)
    return {"dataset": dataset, "split": split, "spec": spec, "seconds": round(time.perf_counter() - t0, 2), **report}


def dataset_key(dataset: str, split: str | None) -> str:
    return dataset if dataset == DB or split is None else f"{dataset}#{split}"


HISTORY = 50  # evaluations a model keeps in ``eval_report.history``, oldest first


def history_entry(report: dict[str, Any]) -> dict[str, Any]:
    """One evaluation's headline numbers and when, for a model's evaluations over time."""
    metrics = {k: v for k, v in report.items() if isinstance(v, float) and k != "seconds"}
    return {"at": utcnow().isoformat(), "key": dataset_key(report["dataset"], report.get("split")), "metrics": metrics}


def store_report(session: Session, model_id: int, report: dict[str, Any]) -> Model:
    """Keep ``report`` on the model row, under ``eval_report["evaluations"][dataset#split]``."""
    model = session.get(Model, model_id, with_for_update=True)
    if model is None:
        raise LookupError(f"no model {model_id}")
    evaluations = dict((model.eval_report or {}).get("evaluations") or {})
    evaluations[dataset_key(report["dataset"], report.get("split"))] = report
    history = list((model.eval_report or {}).get("history") or [])
    history.append(history_entry(report))
    model.eval_report = {**(model.eval_report or {}), "evaluations": evaluations, "history": history[-HISTORY:]}
    session.flush()
    return model
