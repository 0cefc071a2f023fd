"""Composite queries: several weighted parts (texts, images, stored items) searched as one vector.

Each part becomes a unit vector in the request's snapshot: a text or an image through that
snapshot's encoder (texts through the query cache), an item as its own stored vector read back
from that snapshot's index. The query is their weighted sum, normalised:

    q = v / |v|,  v = sum_i w_i u_i

Every stored vector is unit length too, so ranking items ``x`` by ``cos(q, x)`` is ranking them
by ``sum_i w_i cos(u_i, x)``: each part adds its similarity to the item times its weight, and a
negative weight takes that similarity off ("red car" 1.0, "blue" -0.5 ranks a red car above a
blue one). Only the weights' ratios and signs matter. The hit's ``score`` is ``cos(q, x)``, so
``min_score``, ``dedupe``, filters and paging work as for any vector query: from here on a
composite query *is* a vector query (``app.serving.query.run_search``).

Refused, with a 4xx (``SearchRefused``): no parts or more than ``CROSSMODAL_MAX_QUERY_PARTS``
(422), a blank or too long text (422), an item id that names no live item (404), an item with
no stored vector in either index (409), and parts that cancel out, ``|v|`` at most ``ZERO``
times ``sum_i |w_i|`` or not finite (400, ``zero_query``).

In hybrid mode the vector list is ranked by ``q`` and the lexical list by the words of the
texts with a positive weight (negative texts, images and items act through ``q`` alone); with
no positive text the lexical list is empty and the fused ranking follows the vector list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image
from sqlalchemy.orm import sessionmaker

from app.config import Settings
from app.db import crud
from app.serving.batching import QueryCache
from app.serving.query import QueryInput, SearchRefused, _stored_vectors, run_search
from app.serving.schemas import SearchOptions, SearchResponse
from app.serving.state import SearchState, Snapshot
from crossmodal_kernel.modality import Modality

ZERO = 1e-6  # |v| at most this times the total absolute weight: the parts cancel out

PartKind = Literal["text", "image", "item"]


@dataclass(frozen=True)
class Part:
    """One part of a composite query: a text, a decoded image or an item id, and its weight.

    ``modality`` (items only) names which of the item's stored vectors to use; None takes the
    searched index's (``target``), else the other one's."""

    kind: PartKind
    value: str | Image.Image | int
    weight: float
    modality: Modality | None = None

    @property
    def text(self) -> str:
        assert self.kind == "text" and isinstance(self.value, str)
        return self.value

    @property
    def image(self) -> Image.Image:
        assert self.kind == "image" and isinstance(self.value, Image.Image)
        return self.value

    @property
    def item(self) -> int:
        assert self.kind == "item" and isinstance(self.value, int)
        return self.value

    def describe(self, at: int) -> str:
        what = {"text": "a text", "image": "an image", "item": f"item {self.value}"}[self.kind]
        return f"parts[{at}] ({what})"


@dataclass(frozen=True)
class Composite:
    """A composite query as ``run_search`` takes it (``QueryInput("composite", ...)``)."""

    parts: tuple[Part, ...]
    target: Modality

    @property
    def words(self) -> str:
        """What the lexical list of hybrid mode matches: the texts with a positive weight."""
        return " ".join(p.text for p in self.parts if p.kind == "text" and p.weight > 0)

    def vector(self, snap: Snapshot, cache: QueryCache) -> np.ndarray:
        """The unit query vector (d,) in ``snap``'s space: its encoder, its indexes, its text cache."""
        vectors = part_vectors(self.parts, self.target, snap, cache)
        return combine(vectors, [p.weight for p in self.parts])


def combine(vectors: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """``sum_i w_i u_i``, normalised, with ``u_i`` the rows of ``vectors`` (n, d) made unit length;
    a :class:`SearchRefused` (400) when a part has no direction or the sum has none."""
    rows = np.asarray(vectors, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if rows.ndim != 2 or len(rows) != len(w) or len(w) == 0:
        raise ValueError(f"need one weight per part, got {rows.shape} vectors and {len(w)} weights")
    norms = np.linalg.norm(rows, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if len(bad):
        raise SearchRefused(400, "zero_query", f"parts[{bad[0]}] has a zero or non-finite vector")
    total = w @ (rows / norms[:, None])
    size = float(np.linalg.norm(total))
    scale = float(np.abs(w).sum())
    if not np.isfinite(size) or not np.isfinite(scale) or size <= ZERO * scale:
        raise SearchRefused(
            400,
            "zero_query",
            "the parts cancel out (their weighted sum has no direction): change a weight or add a part",
        )
    return (total / size).astype(np.float32)


def part_vectors(parts: Sequence[Part], target: Modality, snap: Snapshot, cache: QueryCache) -> np.ndarray:
    """(n, d): each part's vector in ``snap``'s space, texts and images each encoded in one pass."""
    encoder = snap.encoder
    assert encoder is not None  # run_search's _check refused a snapshot without one
    out: list[np.ndarray | None] = [None] * len(parts)
    model = (snap.model_id, snap.model_spec)
    texts: dict[str, list[int]] = {}  # the texts not in the cache, and where they stand
    for i, p in enumerate(parts):
        if p.kind == "text":
            known = cache.get(model, p.text)
            if known is None:
                texts.setdefault(p.text, []).append(i)
            out[i] = known
    if texts:
        for text, vector in zip(texts, encoder.encode_texts(list(texts)), strict=True):
            cache.put(model, text, np.array(vector))
            for i in texts[text]:
                out[i] = vector
    images = [i for i, p in enumerate(parts) if p.kind == "image"]
    if images:
        encoded = encoder.encode_images([parts[i].image for i in images])
        for i, vector in zip(images, encoded, strict=True):
            out[i] = vector
    for i, vector in item_vectors(parts, target, snap).items():
        out[i] = vector
    assert all(v is not None for v in out)  # every kind was handled above
    return np.stack([np.asarray(v, dtype=np.float32) for v in out])


def item_vectors(parts: Sequence[Part], target: Modality, snap: Snapshot) -> dict[int, np.ndarray]:
    """The stored vector of each item part (by part position): from the index its ``modality`` names,
    else the ``target`` index's, else the other one's; a 409 for an item in neither."""
    out: dict[int, np.ndarray] = {}
    for i, p in enumerate(parts):
        if p.kind != "item":
            continue
        order = [p.modality] if p.modality is not None else [target, target.other]
        for modality in order:
            loaded = snap.indexes.get(modality)
            found = _stored_vectors(loaded)([p.item]) if loaded is not None else {}
            if p.item in found:
                out[i] = found[p.item]
                break
        else:
            where = f"the {p.modality.value} index" if p.modality is not None else "the image or the text index"
            raise SearchRefused(
                409,
                "item_not_indexed",
                f"{p.describe(i)} has no stored vector in {where} (not embedded yet, or an index that cannot "
                "give its vectors back)",
            )
    return out


def check_count(n: int, settings: Settings) -> None:
    """A 422 for no parts or more than ``CROSSMODAL_MAX_QUERY_PARTS`` (before any is decoded)."""
    if n < 1:
        raise SearchRefused(422, "no_parts", "a composite query needs at least one part")
    if n > settings.max_query_parts:
        raise SearchRefused(
            422,
            "too_many_parts",
            f"the query has {n} parts; the limit is {settings.max_query_parts} (CROSSMODAL_MAX_QUERY_PARTS)",
        )


def check_parts(parts: Sequence[Part], settings: Settings) -> None:
    """The checks that need no model: how many parts, and each text's length."""
    check_count(len(parts), settings)
    for i, p in enumerate(parts):
        if p.kind != "text":
            continue
        text = p.text
        if not text.strip():
            raise SearchRefused(422, "empty_query", f"{p.describe(i)} is empty")
        if len(text) > settings.max_query_chars:
            raise SearchRefused(
                422,
                "query_too_long",
                f"{p.describe(i)} has {len(text)} characters; the limit is {settings.max_query_chars}",
            )


def check_items(session_factory: sessionmaker, parts: Sequence[Part]) -> None:
    """A 404 for an item part that names no live item."""
    wanted = {p.item for p in parts if p.kind == "item"}
    if not wanted:
        return
    with session_factory() as session:
        live = crud.live_ids(session, sorted(wanted))
    for i, p in enumerate(parts):
        if p.kind == "item" and p.item not in live:
            raise SearchRefused(404, "item_not_found", f"{p.describe(i)}: no item with id {p.value}")


def run_composite(
    state: SearchState,
    session_factory: sessionmaker,
    settings: Settings,
    parts: Sequence[Part],
    opts: SearchOptions,
) -> tuple[SearchResponse, dict[str, float]]:
    """Check the parts, then search with their combined vector (``run_search``: the request's
    snapshot encodes the parts and ranks, so a model swap never splits one query across two models)."""
    check_parts(parts, settings)
    check_items(session_factory, parts)
    query = QueryInput("composite", Composite(tuple(parts), opts.target))
    return run_search(state, session_factory, settings, query, opts)
