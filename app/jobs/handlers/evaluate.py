"""``evaluate`` jobs: a model's report on an evaluation set, stored on its row."""

from __future__ import annotations

from app.db.models import Model
from app.jobs.context import JobContext
from app.jobs.kinds import EvaluateParams
from app.pipelines.evaluation import DB, evaluate_spec, store_report


def run(ctx: JobContext, params: dict) -> dict:
    p = EvaluateParams.model_validate(params)
    dataset = p.dataset if p.dataset == DB else str(ctx.allowed_path(p.dataset, "dataset"))
    with ctx.session_factory() as session:
        model = session.get(Model, p.model_id)
        if model is None:
            raise LookupError(f"no model {p.model_id}")
        spec = model.spec
    report = evaluate_spec(ctx.settings, ctx.session_factory, spec, dataset, p.split, ctx.progress)
    with ctx.session_factory() as session:
        store_report(session, p.model_id, report)
        session.commit()
    return {"model_id": p.model_id, "report": report}
