"""A tiny emoji dataset folder in the layout `crossmodal datasets emoji` writes, without npm or packages.

Fourteen concepts (8 train, 2 val, 4 held out), each drawn by four houses as a small coloured square
whose hue is the concept's and whose shade and noise are the house's, with a name, keyword captions
(one shared by every concept) and the `concept` column that selects the concept hit rule.
"""

from __future__ import annotations

import colorsys
import json
from pathlib import Path

import numpy as np
from PIL import Image

HOUSES = ("apple", "google", "twitter", "facebook")
SUBSETS = {"train": range(0, 8), "val": range(8, 10), "heldout_concepts": range(10, 14)}


def concept_row(i: int) -> dict:
    return {"concept": f"C{i}", "codepoint": f"C{i}", "text": f"thing number {i}",
            "captions": [f"thing number {i}", f"kw{i}", "shared"]}  # fmt: skip


def fake_emoji(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for h, house in enumerate(HOUSES):
        (root / "images" / house).mkdir(parents=True, exist_ok=True)
        for i in range(14):
            r, g, b = colorsys.hsv_to_rgb(i / 14, 0.9, 0.6 + 0.1 * h)
            pixels = np.zeros((16, 16, 3), dtype=np.float64) + 255 * np.array([r, g, b])
            pixels += rng.normal(0, 4 + 4 * h, pixels.shape)
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / "images" / house / f"c{i}.png")

    def rows(subset: str, houses, prefix: str = "", split: str | None = None) -> list[dict]:
        concepts = SUBSETS[{"heldout_house": "train", "heldout_both": "heldout_concepts"}.get(subset, subset)]
        return [{"image": f"{prefix}images/{house}/c{i}.png", "house": house, **concept_row(i),
                 **({"split": split} if split else {})} for house in houses for i in concepts]  # fmt: skip

    def write(path: Path, rs: list[dict]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rs))

    write(root / "train.jsonl", rows("train", HOUSES[:3], split="train"))
    for subset in ("val", "heldout_concepts"):
        for house in HOUSES[:3]:
            write(root / "eval" / f"{subset}-{house}.jsonl", rows(subset, [house], "../"))
    for subset in ("heldout_house", "heldout_both"):
        write(root / "eval" / f"{subset}-facebook.jsonl", rows(subset, ["facebook"], "../"))
        write(root / f"{subset}.jsonl", rows(subset, ["facebook"]))
    return root
