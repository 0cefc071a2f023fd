"""Data commands: the schema, ingesting, embedding, deleting, re-indexing, synthetic data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import USER_ERRORS, fail, session_factory, setup
from app.config import settings_markdown_table

db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the Alembic migrations (creates the database on first use)."""
    from app.db.session import upgrade

    settings = setup()
    upgrade(settings.resolved_database_url, revision)
    typer.echo(f"database at revision {revision}")


def ingest(
    source: Annotated[
        Path, typer.Argument(help="A folder of images (+ .txt captions) or a .csv/.jsonl/.parquet manifest.")
    ],
) -> None:
    """Add a source's items, embed them with the active model and publish the indexes."""
    from app.pipelines.ingest import ingest as run_ingest
    from app.progress import Bars

    settings = setup()
    try:
        with Bars() as bars:
            report = run_ingest(source, settings, session_factory(settings), progress=bars)
    except USER_ERRORS as e:
        raise fail(e) from e
    typer.echo(report.summary())


def embed() -> None:
    """Embed every item that has no vector for the active model, then publish the indexes.

    Under ``torchrun --nproc-per-node N -m app.cli embed`` rank r embeds shards r, r+N, …
    and rank 0 publishes once all ranks are done. Restarting skips finished shards.
    """
    import torch.distributed as dist

    from app.encoders import load_encoder
    from app.pipelines.ingest import IngestReport, embed_pending, ensure_active_model
    from app.pipelines.publish import publish_indexes
    from app.progress import Bars
    from crossmodal_kernel.distributed import init_distributed

    settings = setup()
    info = init_distributed()
    try:
        sf = session_factory(settings)
        with sf() as session:
            model = ensure_active_model(session, settings)
        device = str(info.device) if info.world_size > 1 else None
        encoder = load_encoder(settings, model.spec, device=device)
        report = IngestReport(source="embed", model_id=model.id)
        with Bars(enabled=info.is_main) as bars:
            embed_pending(sf, encoder, model, settings, report, bars, rank=info.rank, world_size=info.world_size)
            if info.world_size > 1:
                dist.barrier()
            if info.is_main:
                report.indexes = publish_indexes(sf, model, settings, progress=bars)
    except USER_ERRORS as e:
        raise fail(e) from e
    if info.is_main:
        typer.echo(report.summary())


def delete(
    ids: Annotated[list[int] | None, typer.Argument(help="Item ids to delete.")] = None,
    external_id: Annotated[list[str] | None, typer.Option("--external-id", help="Delete by external id.")] = None,
) -> None:
    """Delete items: search stops returning them at once; the index drops them at its next compaction."""
    from app.db import crud

    settings = setup()
    try:
        with session_factory(settings)() as session:
            deleted = crud.soft_delete_items(session, ids or [], external_id or [])
            session.commit()
    except USER_ERRORS as e:
        raise fail(e) from e
    typer.echo(f"deleted {len(deleted)} item(s): {deleted}")


def reindex(
    rebuild: Annotated[bool, typer.Option(help="Rebuild from scratch (compacts deleted items away).")] = True,
) -> None:
    """Publish fresh indexes for the active model (a new version; running servers swap to it)."""
    from app.db import crud
    from app.pipelines.ingest import IngestReport
    from app.pipelines.publish import publish_indexes
    from app.progress import Bars

    settings = setup()
    try:
        sf = session_factory(settings)
        with sf() as session:
            model = crud.get_active_model(session)
        if model is None:
            raise RuntimeError("no active model yet: run `crossmodal ingest SOURCE` first")
        report = IngestReport(source="reindex", model_id=model.id)
        with Bars() as bars:
            report.indexes = publish_indexes(sf, model, settings, force=rebuild, progress=bars)
    except USER_ERRORS as e:
        raise fail(e) from e
    typer.echo(report.summary())


def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the dataset into.")],
    n: int = 2000,
    seed: int = 0,
    image_size: int = 128,
) -> None:
    """Generate the synthetic coloured-shapes dataset (images + manifest.csv + hard.csv)."""
    from training.synthetic.shapes import generate_dataset

    ds = generate_dataset(out, n=n, seed=seed, image_size=image_size)
    typer.echo(f"manifest: {ds.manifest}\nhard split: {ds.hard}")


def config_table() -> None:
    """Print the configuration table (docs/configuration.md's is generated from this)."""
    typer.echo(settings_markdown_table())


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    for command in (ingest, embed, delete, reindex, synth):
        app.command()(command)
    app.command("config-table")(config_table)
