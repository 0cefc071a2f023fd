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


MAX_POINTS = 400  # training points a job's series keeps: beyond, every other one is dropped (evaluations all stay)


def new_series() -> dict[str, list]:
    """A fine-tune's curves, kept in the job's ``details.series``: ``train`` rows ``[step, loss, lr]`` (thinned to
    at most ``MAX_POINTS``, the last step always kept), ``val`` the validation metrics at each evaluation."""
    return {"train": [], "val": []}


def add_point(series: dict[str, list], entry: dict) -> None:
    train = series["train"]
    if train and train[-1][0] >= entry["step"]:  # a resumed run reports its steps again from the checkpoint
        series["train"] = train = [row for row in train if row[0] < entry["step"]]
        series["val"] = [row for row in series["val"] if row["step"] < entry["step"]]
    if len(train) >= 2 and len(train) >= MAX_POINTS:
        series["train"] = train = train[:-1:2] + [train[-1]]
    if len(train) >= 2 and train[-1][0] - train[-2][0] < _stride(train):
        train.pop()  # the last point stands in for a step between strides: replaced, so the curve ends at "now"
    train.append([entry["step"], _num(entry.get("loss")), _num(entry.get("lr"))])
    if entry.get("val"):
        series["val"].append({k: _num(v) for k, v in entry["val"].items()})


def series_from(history: list[dict], evals: list[dict]) -> dict[str, list]:
    """The series of a whole run, from the trainer's result (a torchrun fine-tune reports it this way)."""
    series = new_series()
    by_step = {e["step"]: e for e in evals}
    for entry in history:
        add_point(series, {**entry, **({"val": by_step[entry["step"]]} if entry["step"] in by_step else {})})
    return series


def _stride(train: list) -> int:
    return max(1, train[1][0] - train[0][0]) if len(train) >= 2 else 1


def _num(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def train_progress(ctx: JobContext):
    """The trainer's per-step report, as the job's progress and its ``series`` (cancellation is the trainer's to
    notice). A later attempt starts from the series its predecessor stored."""
    series = ctx.keep.setdefault("series", _stored_series(ctx))

    def report(entry: dict) -> None:
        add_point(series, entry)
        message = f"step {entry['step']}/{entry['total']}, loss {entry['loss']:.4f}"
        try:
            ctx.progress("train", entry["step"], entry["total"], unit="steps", message=message)
        except (JobCancelled, JobInterrupted):
            pass  # the trainer asks ``cancel`` next, saves a checkpoint and stops

    return report


def _stored_series(ctx: JobContext) -> dict[str, list]:
    from app.db.models import Job

    with ctx.session_factory() as session:
        job = session.get(Job, ctx.job_id)
        stored = (job.details or {}).get("series") if job is not None else None
    return stored if isinstance(stored, dict) and {"train", "val"} <= set(stored) else new_series()
