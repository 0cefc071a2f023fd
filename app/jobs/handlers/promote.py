"""``promote`` jobs: gate on a measured evaluation, build the candidate's embeddings and indexes beside the
live ones, then flip the active pair in one transaction (``app.pipelines.lifecycle``)."""

from __future__ import annotations

import logging
import time

from app.db import crud
from app.db.models import Model, ModelStatus
from app.encoders import load_encoder
from app.jobs.context import JobContext, JobRefused
from app.jobs.kinds import PromoteParams
from app.pipelines.calibration import ensure_calibration
from app.pipelines.evaluation import DB, evaluate_spec, store_report
from app.pipelines.ingest import embed_and_publish
from app.pipelines.lifecycle import cleanup, flip

log = logging.getLogger(__name__)


class PromotionRefused(JobRefused):
    """The candidate does not beat the active model: the job fails with this reason and the decision."""


def run(ctx: JobContext, params: dict) -> dict:
    p = PromoteParams.model_validate(params)
    metric = p.metric or ctx.settings.promotion_metric
    dataset = p.dataset if p.dataset == DB else str(ctx.allowed_path(p.dataset, "dataset"))
    with ctx.session_factory() as session:
        candidate = session.get(Model, p.model_id)
        if candidate is None:
            raise LookupError(f"no model {p.model_id}")
        if candidate.status == ModelStatus.ACTIVE:
            raise ValueError(f"model {p.model_id} is already the active model")
        active = crud.get_active_model(session)
    decision = _gate(ctx, candidate, active, metric, dataset, p.split, p.force)
    ctx.notes["decision"] = decision
    with ctx.session_factory() as session:
        row = session.get(Model, candidate.id)
        row.eval_report = {**(row.eval_report or {}), "promotion": decision}
        session.commit()
    if not decision["promote"]:
        raise PromotionRefused(
            f"refused: {decision['candidate']:.3f} vs {decision['active']:.3f} on {metric}: model {candidate.id} does "
            f"not beat the active model {active.id if active else '-'}; pass force to promote it anyway"
        )
    t0 = time.perf_counter()
    encoder = load_encoder(ctx.settings, candidate.spec)

    def embed():
        return embed_and_publish(
            ctx.session_factory, ctx.settings, candidate, source=ctx.kind, encoder=encoder, progress=ctx.progress
        )

    built = embed()  # beside the live pair: nothing serving changes yet
    caught_up = embed()  # items ingested meanwhile
    # relevance refitted on the set the promotion measured it on, before it serves
    ctx.progress("calibrate relevance", 0, None)
    calibration = ensure_calibration(ctx.settings, ctx.session_factory, candidate.id, dataset=dataset,
                                     split=None if dataset == DB else p.split, encoder=encoder, force=True)  # fmt: skip
    with ctx.session_factory() as session:
        flip(session, candidate.id)
        session.commit()
    log.info("model %d is active (was %s)", candidate.id, active.id if active else None)
    after = embed()  # and the moment before the flip
    return {
        "decision": decision,
        "model_id": candidate.id,
        "previous_model_id": active.id if active else None,
        "indexes": {**built.indexes, **caught_up.indexes, **after.indexes},
        "embedded": built.embedded,
        "build_seconds": round(time.perf_counter() - t0, 2),
        "calibration": {
            "status": calibration["status"],
            "dataset": dataset,
            "reasons": calibration.get("reasons") or {},
        },  # fmt: skip
        "cleaned_up": cleanup(ctx.settings, ctx.session_factory),
    }


def _gate(ctx: JobContext, candidate: Model, active: Model | None, metric, dataset, split, force) -> dict:
    """Both models measured on the same set; the candidate must beat the active one unless ``force``."""
    reports = {}
    for role, model in (("candidate", candidate), ("active", active)):
        if model is None:
            continue
        ctx.progress(f"evaluate the {role} model", 0, None)
        report = evaluate_spec(ctx.settings, ctx.session_factory, model.spec, dataset, split, ctx.progress)
        with ctx.session_factory() as session:
            store_report(session, model.id, report)
            session.commit()
        reports[role] = report
    value = reports["candidate"].get(metric)
    if value is None:
        raise ValueError(f"the evaluation has no metric {metric!r}; it has {sorted(reports['candidate'])}")
    baseline = reports["active"].get(metric) if "active" in reports else None
    beats = baseline is None or value > baseline
    return {
        "metric": metric,
        "dataset": dataset,
        "split": split,
        "candidate": value,
        "active": baseline,
        "active_model_id": active.id if active else None,
        "beats": beats,
        "forced": bool(force),
        "promote": beats or bool(force),
        "reports": reports,
    }
