"""Model commands: bootstrap the offline model, fine-tune, evaluate on any evaluation set."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import USER_ERRORS, fail, session_factory, setup


def bootstrap(
    manifest: Annotated[Path, typer.Argument(help="Manifest with a `split` column; trains on split=train.")],
    base: Annotated[str | None, typer.Option(help="Model spec to bootstrap [default: CROSSMODAL_MODEL_SPEC].")] = None,
    epochs: int = 60,
    image_views: Annotated[
        int | None,
        typer.Option(min=0, help="Augmented views per image beside the clean one [default: the bootstrap's]."),
    ] = None,
    synonym_wordings: Annotated[
        int,
        typer.Option(
            min=0,
            help="Rewordings per caption with words swapped for WordNet synonyms and hyponyms (needs a WordNet "
            "database: apt-get install wordnet-base, or CROSSMODAL_WORDNET_DIR).",
        ),
    ] = 0,
    feature_dropout: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.9,
            help="Dropout on the frozen image features the image head reads (0.5 is the emoji recipe: it lifts "
            "held-out concepts and drawing styles there and costs the synthetic world; docs/findings.md F30).",
        ),
    ] = 0.0,
) -> None:
    """Train a model's projection heads (LiT-style) and make it the active model."""
    from app.pipelines.bootstrap import bootstrap_model
    from training.bootstrap import BootstrapConfig

    settings = setup()
    cfg = BootstrapConfig(
        epochs=epochs,
        num_workers=settings.num_workers,
        synonym_wordings=synonym_wordings,
        feature_dropout=feature_dropout,
    )
    if image_views is not None:  # otherwise the bootstrap's default
        cfg = dataclasses.replace(cfg, image_views=image_views)
    try:
        row = bootstrap_model(settings, session_factory(settings), manifest, base, cfg)
    except USER_ERRORS as e:  # a missing WordNet is a FileNotFoundError that says how to install one
        raise fail(e) from e
    typer.echo(f"model #{row.id} active: {row.spec}")
    typer.echo(json.dumps((row.eval_report or {}).get("held_out", {}), indent=2))


def finetune(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML training configuration.")],
    register: Annotated[bool, typer.Option(help="Record the result as a candidate model in the DB.")] = True,
    from_db: Annotated[bool, typer.Option(help="Train on the DB's items that have an image and a text.")] = False,
) -> None:
    """Fine-tune a model (resumes when the output folder holds a checkpoint)."""
    from app.progress import Bars
    from training.config import TrainConfig
    from training.trainer import finetune as run_finetune

    settings = setup()
    try:
        cfg = TrainConfig.from_yaml(config)
        if from_db:
            from app.pipelines.bootstrap import export_pairs

            manifest = Path(cfg.output_dir) / "db-pairs.jsonl"
            n = export_pairs(session_factory(settings), manifest)
            typer.echo(f"exported {n} image-text pairs from the database to {manifest}")
            cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"manifest": manifest})})
    except (OSError, ValueError, RuntimeError) as e:
        raise fail(e) from e
    bars = Bars()

    def progress(entry: dict) -> None:
        message = f"loss {entry['loss']:.4f}, lr {entry['lr']:.2e}, {entry['samples_per_s']:.1f} samples/s"
        bars("finetune", entry["step"], cfg.optim.steps, unit="steps", message=message)

    try:
        with bars:
            result = run_finetune(cfg, progress=progress)
    except USER_ERRORS as e:
        raise fail(e) from e
    typer.echo(f"checkpoint: {result.checkpoint}  (steps {result.steps}, best val t2i R@1 {result.best_val_r1})")
    if result.skipped_rows:
        typer.echo(f"skipped rows: {dict(result.skipped_rows)}")
    if register and result.checkpoint:
        _register(settings, cfg.model, result)


def _register(settings, base_spec: str, result) -> None:
    from app.db import crud
    from crossmodal_kernel.specs import parse_spec

    spec = str(parse_spec(base_spec).with_checkpoint(str(result.checkpoint.resolve())))
    with session_factory(settings)() as session:
        active = crud.get_active_model(session)
        row = crud.create_model(
            session,
            spec,
            name=f"finetune of {base_spec}",
            checkpoint_path=str(result.checkpoint.resolve()),
            parent_id=active.id if active is not None and active.spec == base_spec else None,
            eval_report={"val": result.evals[-1] if result.evals else None},
        )
        session.commit()
        typer.echo(f"registered candidate model #{row.id}: {spec}")


def evaluate(
    dataset: Annotated[
        str,
        typer.Option(help="`db` (the database's held-out split), a manifest, or a synthetic dataset folder."),
    ],
    model: Annotated[str | None, typer.Option(help="Model spec to evaluate.")] = None,
    model_id: Annotated[int | None, typer.Option(help="A registered model (its report is stored on it).")] = None,
    split: Annotated[
        str | None, typer.Option(help="Split of a synthetic folder or a manifest's `split` column.")
    ] = "test",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here.")] = None,
    markdown_out: Annotated[Path | None, typer.Option("--markdown", help="Write the report as markdown.")] = None,
) -> None:
    """Recall@1/5/10 both ways, median rank (duplicate-aware); binding, probe and zero-shot where the set has them."""
    from app.db.models import Model
    from app.pipelines.evaluation import DB, evaluate_spec, store_report
    from training.evaluate import report_markdown

    settings = setup()
    try:
        if (model is None) == (model_id is None):
            raise ValueError("give --model SPEC or --model-id N (one of them)")
        needs_db = dataset == DB or model_id is not None
        sf = session_factory(settings) if needs_db else None
        if model_id is not None:
            assert sf is not None  # needs_db
            with sf() as session:
                row = session.get(Model, model_id)
                if row is None:
                    raise LookupError(f"no model {model_id}")
                model = row.spec
        if dataset != DB and not Path(dataset).exists():
            raise FileNotFoundError(f"no such dataset: {dataset}")
        assert model is not None  # --model, or --model-id's spec
        report = evaluate_spec(settings, sf, model, dataset, split)
        if model_id is not None:
            assert sf is not None  # needs_db
            with sf() as session:
                store_report(session, model_id, report)
                session.commit()
    except USER_ERRORS as e:
        raise fail(e) from e
    report = {"model": model, **report}
    md = report_markdown(report)
    typer.echo(md)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))
    if markdown_out:
        markdown_out.write_text(md)


def register(app: typer.Typer) -> None:
    for command in (bootstrap, finetune, evaluate):
        app.command()(command)
