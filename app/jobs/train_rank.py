"""One rank of a ``finetune`` job under torchrun: ``python -m app.jobs.train_rank JOB WORKER ATTEMPT CONFIG``.

Every rank trains; rank 0 reports progress to the job's row, asks whether the job was cancelled
(the trainer tells the other ranks, so all stop at the same step) and writes the outcome for the
job's child process to read.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from app.runtime import apply_runtime_defaults

apply_runtime_defaults()

# ruff: noqa: E402
from app.config import Settings
from app.db.session import make_engine, make_session_factory
from app.jobs import queue
from app.jobs.context import JobContext
from app.jobs.training_run import OUTCOME, result_dict, train_progress
from crossmodal_kernel import atomic
from crossmodal_kernel.distributed import init_distributed
from crossmodal_kernel.processes import die_with_parent
from training.config import TrainConfig
from training.trainer import finetune


def main(argv: list[str]) -> int:
    job_id, worker_id, attempt, config_file = int(argv[0]), argv[1], int(argv[2]), Path(argv[3])
    die_with_parent()
    settings = Settings()
    cfg = TrainConfig.model_validate_json(config_file.read_text())
    dist = init_distributed()
    ctx = JobContext(
        queue.Lease(job_id, worker_id, attempt),
        "finetune",
        {},
        settings,
        make_session_factory(make_engine(settings.resolved_database_url)),
    )
    signal.signal(signal.SIGTERM, lambda *_: setattr(ctx, "interrupted", True))
    main_rank = dist.is_main
    result = finetune(cfg, progress=train_progress(ctx) if main_rank else None, cancel=ctx.should_stop)
    if main_rank:
        atomic.write_text(Path(cfg.output_dir) / OUTCOME, json.dumps(result_dict(result), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
