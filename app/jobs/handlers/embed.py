"""``embed`` and ``reindex`` jobs: embed whatever has no vector yet for a model, then publish its indexes."""

from __future__ import annotations

from app.db.models import Model, ModelStatus
from app.jobs.context import JobContext
from app.jobs.kinds import EmbedParams
from app.pipelines.ingest import embed_and_publish, ensure_active_model, recalibrate


def run(ctx: JobContext, params: dict) -> dict:
    p = EmbedParams.model_validate(params)
    with ctx.session_factory() as session:
        model = session.get(Model, p.model_id) if p.model_id is not None else ensure_active_model(session, ctx.settings)
        if model is None:
            raise LookupError(f"no model {p.model_id}")
    rebuild = p.rebuild or p.kind == "reindex"
    report = embed_and_publish(
        ctx.session_factory, ctx.settings, model, source=ctx.kind, rebuild=rebuild, progress=ctx.progress
    )
    if model.status == ModelStatus.ACTIVE:  # the items changed: so may the held-out pairs it is calibrated on
        recalibrate(ctx.settings, ctx.session_factory, model.id)
    return report.as_dict()
