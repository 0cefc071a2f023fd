"""``embed`` and ``reindex`` jobs: embed whatever has no vector yet for a model, then publish its indexes."""

from __future__ import annotations

from app.db.models import Model
from app.encoders import load_encoder
from app.ingest import IngestReport, embed_pending, ensure_active_model
from app.jobs.context import JobContext
from app.jobs.kinds import EmbedParams
from app.publish import publish_indexes


def run(ctx: JobContext, params: dict) -> dict:
    p = EmbedParams.model_validate(params)
    with ctx.session_factory() as session:
        model = session.get(Model, p.model_id) if p.model_id is not None else ensure_active_model(session, ctx.settings)
        if model is None:
            raise LookupError(f"no model {p.model_id}")
    report = embed_model(ctx, model, rebuild=p.rebuild or p.kind == "reindex")
    return report.as_dict()


def embed_model(ctx: JobContext, model: Model, rebuild: bool = False) -> IngestReport:
    """Embed every live item that ``model`` has no vector for (resuming from finished shards), and publish."""
    report = IngestReport(source=ctx.kind, model_id=model.id)
    encoder = load_encoder(ctx.settings, model.spec)
    embed_pending(ctx.session_factory, encoder, model, ctx.settings, report, ctx.progress)
    report.indexes = publish_indexes(ctx.session_factory, model, ctx.settings, force=rebuild, progress=ctx.progress)
    return report
