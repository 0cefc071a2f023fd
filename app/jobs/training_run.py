"""What the processes of one ``finetune`` job share: its validated configuration, its progress report and its outcome.

The job's handler (in the worker's child), ``app.jobs.submit`` (checking a request before it is
queued) and every torchrun rank (``app.jobs.train_rank``) use these, so they live below all three.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.config import Settings
from app.jobs.context import JobCancelled, JobContext, JobInterrupted, resolve_allowed
from app.jobs.kinds import JobTrainConfig
from training.config import TrainConfig

OUTCOME = "outcome.json"  # what rank 0 of a torchrun fine-tune reports back


def finetune_config(settings: Settings, raw: dict[str, Any], output_dir: Path, default_model: str) -> TrainConfig:
    """The job's configuration, validated like the YAML; the service picks ``output_dir``.

    Raises ``pydantic.ValidationError`` (an unknown key, a bad value), ``ValueError`` (``output_dir``
    given) or ``PermissionError`` (a manifest outside the allowed roots).
    """
    JobTrainConfig.check(raw)
    raw = {**raw, "output_dir": str(output_dir), "model": raw.get("model", default_model)}
    raw["data"] = dict(raw.get("data") or {})
    if raw["data"].get("manifest") is not None:
        raw["data"]["manifest"] = str(resolve_allowed(settings, raw["data"]["manifest"], "data.manifest"))
    return TrainConfig.model_validate(raw)


def result_dict(result) -> dict:
    from dataclasses import asdict

    return {**asdict(result), "checkpoint": str(result.checkpoint) if result.checkpoint else None}


def train_progress(ctx: JobContext):
    """The trainer's per-step report, as the job's progress (cancellation is the trainer's to notice)."""

    def report(entry: dict) -> None:
        message = f"step {entry['step']}/{entry['total']}, loss {entry['loss']:.4f}"
        try:
            ctx.progress("train", entry["step"], entry["total"], unit="steps", message=message)
        except (JobCancelled, JobInterrupted):
            pass  # the trainer asks ``cancel`` next, saves a checkpoint and stops

    return report
