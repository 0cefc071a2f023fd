"""``crossmodal demo``: data -> bootstrap the configured model's heads -> ingest -> serve, reusing what exists.

Two data sets: the real emoji set (``crossmodal datasets emoji``: four design houses' drawings
named by CLDR), when npm and its registry (or a warm package cache) are at hand, and the
synthetic shapes world otherwise, or when asked for. The model is bootstrapped on the emoji
set's train split (three houses' drawings of the train concepts) and every drawing is indexed,
held-out concepts and the held-out house included.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import func, select

from app.cli.common import fail, session_factory, setup
from app.config import Settings, comma_list

# The demo's first example query on each data set; the end-to-end tests check its rank-1 answer.
DEMO_QUERY = "a large red circle in the top left"
EMOJI_QUERIES = ("a cat", "something to eat on a birthday", "rain")
EMOJI_INDEXED = ("trainval.jsonl", "heldout_concepts.jsonl", "heldout_house.jsonl", "heldout_both.jsonl")


class DemoData(StrEnum):
    auto = "auto"
    emoji = "emoji"
    synthetic = "synthetic"


def demo(
    n: Annotated[int, typer.Option(help="Synthetic pairs to draw (synthetic data only).")] = 2000,
    data: Annotated[
        DemoData, typer.Option(help="emoji, synthetic, or auto: emoji when npm can fetch it (or it is cached).")
    ] = DemoData.auto,
    houses: Annotated[
        str, typer.Option(help="Emoji houses to index, comma-separated (a smaller demo: --houses google).")
    ] = "apple,google,twitter,facebook",
    serve_api: Annotated[bool, typer.Option("--serve/--no-serve")] = True,
) -> None:
    """Real emoji (or synthetic shapes) -> bootstrap the configured model -> ingest -> serve."""
    from app.db.session import upgrade
    from app.pipelines.ingest import ingest as run_ingest
    from app.progress import Bars

    settings = setup()
    upgrade(settings.resolved_database_url)
    sf = session_factory(settings)
    typer.echo("1/4 data")
    kind, train_manifest, indexed = _prepare(settings, data, n, comma_list(houses))
    _refuse_mixing(sf, indexed)
    _bootstrap(settings, sf, train_manifest)
    typer.echo(f"3/4 ingesting {indexed}")
    with Bars() as bars:
        typer.echo(run_ingest(indexed, settings, sf, progress=bars).summary())
    if serve_api:
        from app.cli.service import serve

        typer.echo("4/4 serving")
        _print_examples(settings, kind)
        serve(None, None)


def _prepare(settings: Settings, data: DemoData, n: int, houses: list[str]) -> tuple[DemoData, Path, Path]:
    """``(kind, the manifest to bootstrap on, the manifest to index)``, built if missing."""
    if data != DemoData.synthetic:
        try:
            return DemoData.emoji, *_emoji(settings.data_dir / "demo-emoji", houses)
        except Exception as e:  # noqa: BLE001 - any failure to get the real data falls back (auto) or stops
            if data == DemoData.emoji:
                raise fail(e) from e
            typer.echo(f"   the emoji set is out of reach ({e}); using the synthetic world instead")
    from training.synthetic.shapes import generate_dataset

    ds = generate_dataset(settings.data_dir / "demo", n=n, seed=0, cover=True)  # every scene has an answer
    return DemoData.synthetic, ds.manifest, ds.manifest


def _emoji(root: Path, houses: list[str]) -> tuple[Path, Path]:
    """The emoji set in ``root`` (fetched and built once), and one manifest of ``houses``' drawings."""
    from training.emoji import build_emoji_dataset

    if not (root / "dataset.json").exists():
        typer.echo(f"   fetching and building the emoji set into {root} (npm, once)")
        build_emoji_dataset(root)
    rows = []
    for name in EMOJI_INDEXED:
        for line in (root / name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row["house"] in houses:
                rows.append(json.dumps({k: v for k, v in row.items() if k != "split"}, ensure_ascii=False))
    if not rows:
        raise ValueError(f"no drawings of the houses {houses}: choose among apple, google, twitter, facebook")
    indexed = root / f"demo-{'-'.join(sorted(houses))}.jsonl"
    if not indexed.exists() or indexed.read_text(encoding="utf-8") != "\n".join(rows) + "\n":
        indexed.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root / "trainval.jsonl", indexed


def _refuse_mixing(sf, indexed: Path) -> None:
    """One demo a database: the other demo's items would show up in this one's results."""
    from app.db.models import Item

    with sf() as session:
        others = session.scalar(select(func.count()).select_from(Item).where(Item.source != str(indexed.resolve())))
    if others:
        raise fail(
            RuntimeError(
                f"the database already holds {others} items from another source; run this demo with another "
                "CROSSMODAL_DATA_DIR (or remove the data folder), or run the demo it came from"
            )
        )


def _bootstrap(settings: Settings, sf, manifest: Path) -> None:
    from app.db import crud
    from app.pipelines.bootstrap import bootstrap_model
    from training.bootstrap import BootstrapConfig

    with sf() as session:
        active = crud.get_active_model(session)
    if active is not None and active.checkpoint_path and (active.name or "").endswith(f"on {manifest.name}"):
        typer.echo(f"2/4 reusing model #{active.id}: {active.spec}")
        return
    typer.echo(f"2/4 bootstrapping {settings.model_spec} (training its projection heads on {manifest.name})")
    row = bootstrap_model(settings, sf, manifest, cfg=BootstrapConfig(num_workers=settings.num_workers))
    typer.echo(json.dumps((row.eval_report or {}).get("held_out", {}), indent=2))


def _print_examples(settings: Settings, kind: DemoData) -> None:
    base = f"http://{settings.host}:{settings.port}"
    queries = EMOJI_QUERIES if kind == DemoData.emoji else (DEMO_QUERY, "a blue square")
    searches = "".join(
        f"""  curl -s -X POST {base}/v1/search/text -H 'content-type: application/json' \\
       -d '{{"query": "{q}", "target": "image", "k": 5}}'
"""
        for q in queries
    )
    typer.echo(
        f"""
crossmodal is serving on {base}  (search page: {base}/ · admin: {base}/admin · API docs: {base}/docs)

Try:
  curl -s {base}/readyz
{searches}  curl -s '{base}/v1/items?limit=2'
  curl -s -o item1.png {base}/v1/items/1/image

Admin (fine-tune, evaluate, promote, roll back): create a key with
  .venv/bin/crossmodal keys create --name me --role admin
"""
    )


def register(app: typer.Typer) -> None:
    app.command()(demo)
