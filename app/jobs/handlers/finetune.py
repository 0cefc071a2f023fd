"""``finetune`` jobs: train in this (child) process or under ``torchrun``, then register a candidate model.

The run's folder is the job's (``data/jobs/<id>/run``), so an attempt that follows a dead one finds
``checkpoints/last.pt`` and resumes from it: the result's ``resumed_from_step`` says where.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from app.db import crud
from app.db.models import Model
from app.jobs.context import JobCancelled, JobContext, JobInterrupted
from app.jobs.kinds import FinetuneParams
from app.jobs.training_run import OUTCOME, finetune_config, result_dict, series_from, train_progress
from app.pipelines.calibration import ensure_calibration
from app.pipelines.evaluation import DB
from crossmodal_kernel.specs import parse_spec
from training.config import TrainConfig

log = logging.getLogger(__name__)


def run(ctx: JobContext, params: dict) -> dict:
    p = FinetuneParams.model_validate(params)
    with ctx.session_factory() as session:
        active = crud.get_active_model(session)
        default_model = active.spec if active is not None else ctx.settings.model_spec
    cfg = finetune_config(ctx.settings, p.config, ctx.workdir / "run", default_model)
    if cfg.data.manifest is None:
        from app.pipelines.bootstrap import export_pairs

        manifest = ctx.workdir / "db-pairs.jsonl"
        if not manifest.exists():  # a resumed attempt trains on the same export
            n = export_pairs(ctx.session_factory, manifest)
            log.info("exported %d image-text pairs from the database", n)
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"manifest": manifest})})
    result = _train_here(ctx, cfg) if p.nproc_per_node == 1 else _train_torchrun(ctx, cfg, p.nproc_per_node)
    ctx.keep["series"] = series_from(result.get("history") or [], result.get("evals") or [])  # for /admin's charts
    if result.get("cancelled"):
        ctx.notes.update({"steps": result["steps"], "resumed_from_step": result.get("resumed_from_step")})
        if ctx.interrupted:
            raise JobInterrupted("stopped at a checkpoint; the next attempt resumes from it")
        raise JobCancelled(f"cancelled at step {result['steps']} (a checkpoint was saved)")
    out = {k: result.get(k) for k in ("steps", "best_val_r1", "stopped_early", "resumed_from_step", "skipped_rows")}
    out["val"] = result["evals"][-1] if result.get("evals") else None
    if p.register_candidate:
        out["model_id"] = _register(ctx, cfg, Path(result["checkpoint"]), out)
    shutil.rmtree(Path(cfg.output_dir) / "checkpoints", ignore_errors=True)  # resume state is not needed now
    return out


def _train_here(ctx: JobContext, cfg: TrainConfig) -> dict:
    from training.trainer import finetune

    return result_dict(finetune(cfg, progress=train_progress(ctx), cancel=ctx.should_stop))


def _train_torchrun(ctx: JobContext, cfg: TrainConfig, nproc: int) -> dict:
    config_file = ctx.workdir / "train-config.json"
    config_file.write_text(cfg.model_dump_json())
    lease = ctx.lease
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "-m", "app.jobs.train_rank", str(lease.job_id), lease.worker_id, str(lease.attempt), str(config_file),
    ]  # fmt: skip
    child = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})

    def on_sigterm(*_: object) -> None:
        ctx.interrupted = True
        child.terminate()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        code = child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code != 0:
        raise RuntimeError(f"torchrun exited with code {code}")
    return json.loads((Path(cfg.output_dir) / OUTCOME).read_text())


def _register(ctx: JobContext, cfg: TrainConfig, checkpoint: Path, summary: dict) -> int:
    """A candidate model row whose weights live in ``data/models/<id>/``."""
    with ctx.session_factory() as session:
        parent = session.query(Model).filter(Model.spec == cfg.model).order_by(Model.id.desc()).first()
        row = crud.create_model(
            session,
            cfg.model,
            name=f"fine-tune (job {ctx.job_id}) of {parent.name or parent.spec if parent else cfg.model}",
            parent_id=parent.id if parent else None,
            eval_report={"val": summary["val"], "train": {k: v for k, v in summary.items() if k != "val"}},
        )
        target = ctx.settings.data_dir / "models" / str(row.id) / "checkpoint.pt"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(checkpoint, target)
        except OSError:
            shutil.copy2(checkpoint, target)
        row.checkpoint_path = str(target.resolve())
        row.spec = str(parse_spec(cfg.model).with_checkpoint(row.checkpoint_path))
        session.commit()
    # its relevance calibration, on the database's held-out pairs (refitted on the promotion's set)
    ctx.progress("calibrate relevance", 0, None)
    ensure_calibration(ctx.settings, ctx.session_factory, row.id, dataset=DB)
    return row.id
