"""The ``crossmodal`` command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from app.config import Settings, get_settings, settings_markdown_table
from app.runtime import apply_runtime_defaults

apply_runtime_defaults()  # before any command imports torch or faiss

app = typer.Typer(help="crossmodal: search images and texts against each other.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)
app.add_typer(db_app, name="db")


# Errors that are the user's to fix (a bad path or spec, an un-migrated database, a
# model that needs a download): print the message, not a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError, RuntimeError)


def _fail(error: BaseException) -> typer.Exit:
    typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
    return typer.Exit(2)


def _setup() -> Settings:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


def _session_factory(settings: Settings):
    from app.db.session import ensure_schema_current, make_engine, make_session_factory

    engine = make_engine(settings.resolved_database_url)
    ensure_schema_current(engine)
    return make_session_factory(engine)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the Alembic migrations (creates the database on first use)."""
    from app.db.session import upgrade

    settings = _setup()
    upgrade(settings.resolved_database_url, revision)
    typer.echo(f"database at revision {revision}")


@app.command()
def ingest(
    source: Annotated[
        Path, typer.Argument(help="A folder of images (+ .txt captions) or a .csv/.jsonl/.parquet manifest.")
    ],
) -> None:
    """Add a source's items, embed them with the active model and publish the indexes."""
    from app.ingest import ingest as run_ingest

    settings = _setup()
    try:
        report = run_ingest(source, settings, _session_factory(settings))
    except USER_ERRORS as e:
        raise _fail(e) from e
    typer.echo(report.summary())


@app.command()
def embed() -> None:
    """Embed every item that has no vector for the active model, then publish the indexes.

    Under ``torchrun --nproc-per-node N -m app.cli embed`` rank r embeds shards r, r+N, …
    and rank 0 publishes once all ranks are done. Restarting skips finished shards.
    """
    import torch.distributed as dist

    from app.encoders import load_encoder
    from app.ingest import IngestReport, embed_pending, ensure_active_model
    from app.publish import publish_indexes
    from crossmodal_kernel.distributed import init_distributed

    settings = _setup()
    info = init_distributed()
    try:
        sf = _session_factory(settings)
        with sf() as session:
            model = ensure_active_model(session, settings)
        device = info.device if info.world_size > 1 else settings.device
        encoder = load_encoder(settings, model.spec, device=device)
        report = IngestReport(source="embed", model_id=model.id)
        embed_pending(sf, encoder, model, settings, report, rank=info.rank, world_size=info.world_size)
        if info.world_size > 1:
            dist.barrier()
        if info.is_main:
            report.indexes = publish_indexes(sf, model, settings)
    except USER_ERRORS as e:
        raise _fail(e) from e
    if info.is_main:
        typer.echo(report.summary())


@app.command()
def delete(
    ids: Annotated[list[int] | None, typer.Argument(help="Item ids to delete.")] = None,
    external_id: Annotated[list[str] | None, typer.Option("--external-id", help="Delete by external id.")] = None,
) -> None:
    """Delete items: search stops returning them at once; the index drops them at its next compaction."""
    from app.db import crud

    settings = _setup()
    try:
        with _session_factory(settings)() as session:
            deleted = crud.soft_delete_items(session, ids or [], external_id or [])
            session.commit()
    except USER_ERRORS as e:
        raise _fail(e) from e
    typer.echo(f"deleted {len(deleted)} item(s): {deleted}")


@app.command()
def reindex(
    rebuild: Annotated[bool, typer.Option(help="Rebuild from scratch (compacts deleted items away).")] = True,
) -> None:
    """Publish fresh indexes for the active model (a new version; running servers swap to it)."""
    from app.db import crud
    from app.ingest import IngestReport
    from app.publish import publish_indexes

    settings = _setup()
    try:
        sf = _session_factory(settings)
        with sf() as session:
            model = crud.get_active_model(session)
        if model is None:
            raise RuntimeError("no active model yet: run `crossmodal ingest SOURCE` first")
        report = IngestReport(source="reindex", model_id=model.id)
        report.indexes = publish_indexes(sf, model, settings, force=rebuild)
    except USER_ERRORS as e:
        raise _fail(e) from e
    typer.echo(report.summary())


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the dataset into.")],
    n: int = 2000,
    seed: int = 0,
    image_size: int = 128,
) -> None:
    """Generate the synthetic coloured-shapes dataset (images + manifest.csv + hard.csv)."""
    from training.synthetic import generate_dataset

    ds = generate_dataset(out, n=n, seed=seed, image_size=image_size)
    typer.echo(f"manifest: {ds.manifest}\nhard split: {ds.hard}")


@app.command()
def bootstrap(
    manifest: Annotated[Path, typer.Argument(help="Manifest with a `split` column; trains on split=train.")],
    base: str = "builtin:lit-mini",
    epochs: int = 60,
) -> None:
    """Train a model's projection heads (LiT-style) and make it the active model."""
    from app.models_admin import bootstrap_model
    from training.bootstrap import BootstrapConfig

    settings = _setup()
    cfg = BootstrapConfig(epochs=epochs, num_workers=settings.num_workers)
    try:
        row = bootstrap_model(settings, _session_factory(settings), manifest, base, cfg)
    except USER_ERRORS as e:
        raise _fail(e) from e
    typer.echo(f"model #{row.id} active: {row.spec}")
    typer.echo(json.dumps(row.eval_report.get("held_out", {}), indent=2))


@app.command()
def finetune(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML training configuration.")],
    register: Annotated[bool, typer.Option(help="Record the result as a candidate model in the DB.")] = True,
    from_db: Annotated[bool, typer.Option(help="Train on the DB's items that have an image and a text.")] = False,
) -> None:
    """Fine-tune a model (resumes when the output folder holds a checkpoint)."""
    from tqdm.auto import tqdm

    from training.config import TrainConfig
    from training.trainer import finetune as run_finetune

    settings = _setup()
    try:
        cfg = TrainConfig.from_yaml(config)
        if from_db:
            from app.models_admin import export_pairs

            manifest = Path(cfg.output_dir) / "db-pairs.jsonl"
            n = export_pairs(_session_factory(settings), manifest)
            typer.echo(f"exported {n} image-text pairs from the database to {manifest}")
            cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"manifest": manifest})})
    except (OSError, ValueError, RuntimeError) as e:
        raise _fail(e) from e
    bar = tqdm(total=cfg.optim.steps, desc="finetune", unit="step", dynamic_ncols=True)

    def progress(entry: dict) -> None:
        bar.update(entry["step"] - bar.n)
        bar.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{entry['lr']:.2e}", sps=f"{entry['samples_per_s']:.1f}")

    try:
        with bar:
            result = run_finetune(cfg, progress=progress)
    except USER_ERRORS as e:
        raise _fail(e) from e
    typer.echo(f"checkpoint: {result.checkpoint}  (steps {result.steps}, best val t2i R@1 {result.best_val_r1})")
    if result.skipped_rows:
        typer.echo(f"skipped rows: {dict(result.skipped_rows)}")
    if register and result.checkpoint:
        from app.db import crud
        from crossmodal_kernel.specs import parse_spec

        base = parse_spec(cfg.model)
        spec = str(base.with_checkpoint(str(result.checkpoint.resolve())))
        with _session_factory(settings)() as session:
            active = crud.get_active_model(session)
            row = crud.create_model(
                session,
                spec,
                name=f"finetune of {cfg.model}",
                checkpoint_path=str(result.checkpoint.resolve()),
                parent_id=active.id if active is not None and active.spec == cfg.model else None,
                eval_report={"val": result.evals[-1] if result.evals else None},
            )
            session.commit()
            typer.echo(f"registered candidate model #{row.id}: {spec}")


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="Model spec to evaluate.")],
    dataset: Annotated[Path, typer.Option(help="A synthetic dataset folder (with manifest.csv + hard.csv).")],
    split: str = "test",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here.")] = None,
    markdown_out: Annotated[Path | None, typer.Option("--markdown", help="Write the report as markdown.")] = None,
) -> None:
    """Recall@K both ways, median rank, hard-split binding, linear probe and zero-shot accuracy."""
    from app.encoders import load_encoder
    from training.evaluate import evaluate_synthetic, report_markdown
    from training.synthetic import load_dataset

    settings = _setup()
    try:
        ds = load_dataset(dataset)
        encoder = load_encoder(settings, model)
        report = evaluate_synthetic(encoder, ds, split)
    except USER_ERRORS as e:
        raise _fail(e) from e
    report = {"model": model, **report}
    md = report_markdown(report)
    typer.echo(md)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))
    if markdown_out:
        markdown_out.write_text(md)


@app.command()
def serve(host: str | None = None, port: int | None = None) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from app.main import create_app

    settings = _setup()
    try:
        _session_factory(settings)  # a database the code cannot use is a message, not a traceback
    except USER_ERRORS as e:
        raise _fail(e) from e
    uvicorn.run(create_app(settings), host=host or settings.host, port=port or settings.port)


def _print_examples(settings: Settings) -> None:
    base = f"http://{settings.host}:{settings.port}"
    typer.echo(
        f"""
crossmodal is serving on {base}  (search page: {base}/ · API docs: {base}/docs)

Try:
  curl -s {base}/readyz
  curl -s -X POST {base}/v1/search/text -H 'content-type: application/json' \\
       -d '{{"query": "a large red circle in the top left", "target": "image", "k": 5}}'
  curl -s -X POST {base}/v1/search/text -H 'content-type: application/json' \\
       -d '{{"query": "a blue square", "target": "text", "k": 3}}'
  curl -s -X POST {base}/v1/search/image -F target=text -F k=3 \\
       -F file=@{settings.data_dir.resolve()}/demo/images/000000.png
  curl -s '{base}/v1/items?limit=2'
  curl -s -o item1.png {base}/v1/items/1/image
"""
    )


@app.command()
def demo(n: int = 2000, serve_api: Annotated[bool, typer.Option("--serve/--no-serve")] = True) -> None:
    """Synthetic data -> bootstrap builtin:lit-mini -> ingest -> serve. Reuses whatever exists."""
    from app.db import crud
    from app.db.session import upgrade
    from app.ingest import ingest as run_ingest
    from app.models_admin import bootstrap_model
    from training.bootstrap import BootstrapConfig
    from training.synthetic import generate_dataset

    settings = _setup()
    upgrade(settings.resolved_database_url)
    session_factory = _session_factory(settings)
    typer.echo("1/4 synthetic dataset")
    ds = generate_dataset(settings.data_dir / "demo", n=n, seed=0)
    with session_factory() as session:
        active = crud.get_active_model(session)
    if active is None or not active.checkpoint_path:
        typer.echo("2/4 bootstrapping builtin:lit-mini (training its projection heads)")
        row = bootstrap_model(
            settings, session_factory, ds.manifest, cfg=BootstrapConfig(num_workers=settings.num_workers)
        )
        typer.echo(json.dumps(row.eval_report.get("held_out", {}), indent=2))
    else:
        typer.echo(f"2/4 reusing model #{active.id}: {active.spec}")
    typer.echo("3/4 ingesting")
    typer.echo(run_ingest(ds.manifest, settings, session_factory).summary())
    if serve_api:
        typer.echo("4/4 serving")
        _print_examples(settings)
        serve(None, None)


@app.command("config-table")
def config_table() -> None:
    """Print the configuration table (the README's is generated from this)."""
    typer.echo(settings_markdown_table())


if __name__ == "__main__":
    app()
