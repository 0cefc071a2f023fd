"""The emoji dataset's manifests, in the project's JSONL manifest format (:mod:`training.sources`).

A row is one drawing: ``image`` (relative to the manifest), ``text`` (the CLDR name), ``id``
(``house/codepoint``), a ``captions`` list (name, short names, keywords, each once) and the
metadata ``house``, ``codepoint``, ``category``, ``subcategory``, ``family`` and ``subset``, and
``concept`` (the codepoint again, under the column name that makes :mod:`training.eval_sets` score a
set by concept: any house's drawing of the query's concept is a hit,
:func:`training.evaluate.concept_retrieval_metrics`).

Which file is for what:

- ``train.jsonl`` / ``val.jsonl``: the training houses' drawings of train / validation concepts,
  with a ``split`` column (``train`` / ``val``); ``trainval.jsonl`` is both, for the commands that
  read one manifest and its ``split`` column (``crossmodal bootstrap``, ``finetune`` with
  ``data.split_column: split``). Evaluate ``val.jsonl`` with ``--split val``.
- ``heldout_concepts.jsonl`` (b), ``heldout_house.jsonl`` (c: the held-out house's drawings of
  the train concepts) and ``heldout_both.jsonl`` (d: the held-out house's drawings of the held-out
  concepts) have no ``split`` column, so ``crossmodal evaluate --dataset FILE`` reads every row
  whatever ``--split`` says. Their pool mixes houses: a query's concept appears once per house.
- ``eval/<subset>-<house>.jsonl``: one house's drawings of one subset, one row per concept. These
  are the figures to quote: the pool holds each concept once, so chance is ``1 / rows``.
- ``concepts.jsonl``: every concept with its family, subset and the houses that draw it, for
  hit rules that need the concept behind a row.

Facebook's drawings of validation concepts are in no manifest: they are neither a seen concept
nor a held-out one, and a figure on them would answer no question the splits ask.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from crossmodal_kernel import atomic
from training.emoji.concepts import Concept
from training.emoji.splits import HELDOUT, TRAIN, VAL

TRAIN_HOUSES = ("apple", "google", "twitter")
HELDOUT_HOUSES = ("facebook",)
IMAGES_DIR = "images"
EVAL_DIR = "eval"
# subset -> (the concepts' split, whether the houses are the held-out ones)
SUBSETS = {
    "train": (TRAIN, False),
    "val": (VAL, False),
    "heldout_concepts": (HELDOUT, False),
    "heldout_house": (TRAIN, True),
    "heldout_both": (HELDOUT, True),
}
SPLIT_COLUMN = {"train": "train", "val": "val"}  # subsets whose manifests carry a `split` column


def image_path(house: str, concept: Concept) -> str:
    """Where a drawing lives, relative to the dataset folder."""
    return f"{IMAGES_DIR}/{house}/{concept.image}"


def row(concept: Concept, house: str, subset: str, prefix: str = "") -> dict:
    """One manifest row; ``prefix`` leads back from the manifest's folder to the dataset folder."""
    out = {
        "id": f"{house}/{concept.codepoint}",
        "image": prefix + image_path(house, concept),
        "text": concept.name,
        "captions": concept.captions,
        "house": house,
        "codepoint": concept.codepoint,
        "concept": concept.codepoint,
        "category": concept.category,
        "subcategory": concept.subcategory,
        "family": concept.family,
        "subset": subset,
    }
    if subset in SPLIT_COLUMN:
        out["split"] = SPLIT_COLUMN[subset]
    return out


def subset_rows(
    concepts: Sequence[Concept],
    splits: dict[str, str],
    subset: str,
    houses: Sequence[str],
    prefix: str = "",
) -> list[dict]:
    """Rows of ``subset`` for ``houses``: house by house, concepts in emoji order, drawn ones only."""
    split, _ = SUBSETS[subset]
    return [
        row(c, house, subset, prefix)
        for house in houses
        for c in concepts
        if splits[c.family] == split and house in c.houses
    ]


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines (UTF-8, names as written, not escaped), atomically; return the count."""
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in rows]
    atomic.write_text(path, "".join(lines))
    return len(lines)


def write_manifests(
    out: Path,
    concepts: Sequence[Concept],
    splits: dict[str, str],
    train_houses: Sequence[str] = TRAIN_HOUSES,
    heldout_houses: Sequence[str] = HELDOUT_HOUSES,
) -> dict[str, int]:
    """Every manifest of the module docstring; returns rows per file (relative path -> count)."""
    counts: dict[str, int] = {}
    by_subset: dict[str, list[dict]] = {}
    for subset, (_, on_heldout_houses) in SUBSETS.items():
        houses = heldout_houses if on_heldout_houses else train_houses
        by_subset[subset] = subset_rows(concepts, splits, subset, houses)
        counts[f"{subset}.jsonl"] = write_jsonl(out / f"{subset}.jsonl", by_subset[subset])
        for house in houses:
            name = f"{EVAL_DIR}/{subset}-{house}.jsonl"
            rows = [_without_split(r) for r in subset_rows(concepts, splits, subset, [house], "../")]
            counts[name] = write_jsonl(out / name, rows)
    counts["trainval.jsonl"] = write_jsonl(out / "trainval.jsonl", [*by_subset["train"], *by_subset["val"]])
    counts["concepts.jsonl"] = write_jsonl(out / "concepts.jsonl", (concept_row(c, splits) for c in concepts))
    return counts


def _without_split(r: dict) -> dict:
    """Evaluation sets carry no ``split`` column, so ``crossmodal evaluate`` reads every row."""
    return {k: v for k, v in r.items() if k != "split"}


def concept_row(concept: Concept, splits: dict[str, str]) -> dict:
    return {
        "codepoint": concept.codepoint,
        "name": concept.name,
        "family": concept.family,
        "split": splits[concept.family],
        "category": concept.category,
        "subcategory": concept.subcategory,
        "houses": list(concept.houses),
        "captions": concept.captions,
    }
