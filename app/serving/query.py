"""One search request, end to end: encode, search (filtered, deduplicated), hydrate, rank, paginate.

The HTTP routes (``app.api.routes.search``, the clip-retrieval compatible ones) parse requests
into :class:`~app.serving.schemas.SearchOptions` and a :class:`QueryInput`, and call :func:`run_search`.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image
from sqlalchemy import Row
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import crud
from app.serving import filters
from app.serving.batching import Query
from app.serving.schemas import IndexInfo, ModelInfo, SearchOptions, SearchResponse, SearchResult
from app.serving.state import LoadedIndex, NotReady, SearchState, Snapshot, search_index
from index.candidates import VectorsUnavailable
from index.dedupe import MAX_DEDUPE

if TYPE_CHECKING:
    from crossmodal_kernel.encoder import Encoder


@dataclass(frozen=True)
class QueryInput:
    """What a request searches with: a text, a decoded image, or a vector already in the space."""

    kind: Literal["text", "image", "vector"]
    value: object

    def text(self) -> str:
        """The query string of a ``text`` query."""
        assert self.kind == "text" and isinstance(self.value, str)  # the routes build it from a str
        return self.value

    def image(self) -> Image.Image:
        """The decoded image of an ``image`` query."""
        assert self.kind == "image" and isinstance(self.value, Image.Image)  # decode_query_image's
        return self.value

    def encode_alone(self, encoder: Encoder) -> np.ndarray:
        if self.kind == "text":
            return encoder.encode_texts([self.text()])
        if self.kind == "image":
            return encoder.encode_images([self.image()])
        return np.asarray(self.value, dtype=np.float32).reshape(1, -1)


TIE_MARGIN = 8


class SearchRefused(Exception):
    """A search this service cannot answer as asked: the HTTP status it maps to, a stable code and
    a message for a person (the API answers it in its one error shape, ``app.api.errors``)."""

    headers = None

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def item_image_url(item_id: int) -> str:
    return f"/v1/items/{item_id}/image"


def _check(snap: Snapshot, settings: Settings, opts: SearchOptions) -> None:
    if opts.k > settings.max_k:
        raise SearchRefused(422, "k_too_large", f"k must be at most {settings.max_k}")
    if snap.encoder is None:
        raise SearchRefused(503, "model_not_loaded", "; ".join(snap.problems) or "model not loaded")
    if opts.target not in snap.indexes:
        raise SearchRefused(
            503,
            "nothing_indexed",
            f"nothing is indexed for target {opts.target!r} yet: run `crossmodal ingest SOURCE` with {opts.target}s",
        )


class _Candidates:
    """Hydrated, filtered candidates of one request: ``keep`` for the overfetch loop, and the rows."""

    def __init__(self, session: Session, where, timings: dict[str, float]):
        self.session, self.where, self.timings = session, where, timings
        self.rows: dict[int, Row] = {}

    def keep(self, ids: np.ndarray) -> np.ndarray:
        """An item deleted since indexing (or failing the filter) is not a result."""
        th = time.perf_counter()
        self.rows.update(crud.get_hits(self.session, ids.tolist(), self.where))
        self.timings["hydrate"] += (time.perf_counter() - th) * 1000
        return np.fromiter((int(i) in self.rows for i in ids), dtype=bool, count=len(ids))


def _allowed(session: Session, settings: Settings, opts: SearchOptions, where) -> np.ndarray | None:
    """The matching ids when the filter is selective enough to restrict the FAISS search to them."""
    if where is None:
        return None
    limit = settings.filter_id_selector_limit
    ids = crud.matching_ids(session, where, opts.target.value, limit + 1)
    return np.asarray(ids, dtype=np.int64) if len(ids) <= limit else None


def _ranked(
    snap: Snapshot, xq: np.ndarray, opts: SearchOptions, found: _Candidates, allowed, first=None
) -> tuple[LoadedIndex, list[tuple[float, int]]]:
    """The best ``offset + k`` (score, id) pairs, ties broken by id, near-duplicates dropped if asked.

    One candidate loop (``index.candidates.search``) fetches deeper until enough survive the
    filter, the cutoff and dedupe. A few candidates past the page are always ranked, so that
    equal scores at the cut are ordered by id on every page alike.
    """
    want, depth = opts.offset + opts.k, _depth(opts)
    if opts.dedupe is not None:
        if want > MAX_DEDUPE // 2:
            raise SearchRefused(
                400, "dedupe_too_deep", f"dedupe works on the first {MAX_DEDUPE // 2} results (offset + k)"
            )
        depth = min(depth, MAX_DEDUPE // 2)
    try:
        loaded, scores, ids = search_index(
            snap, xq, opts.target, depth, keep=found.keep, min_score=opts.min_score, allowed=allowed,
            dedupe=opts.dedupe, first=first,
        )  # fmt: skip
    except VectorsUnavailable as e:
        raise SearchRefused(400, "dedupe_unsupported", str(e)) from e
    return loaded, list(zip(scores.tolist(), ids.tolist(), strict=True))[:want]


def _depth(opts: SearchOptions) -> int:
    """How many ranked candidates a request starts from: its page and everything before it, plus a
    few past it, so that equal scores at the cut are ordered by id on every page alike."""
    return opts.offset + opts.k + TIE_MARGIN


def _encode(state: SearchState, snap: Snapshot, query: QueryInput, opts: SearchOptions, batch_search, ticket):
    """``(xq (1, d), first round (D, I) or None)``: through the batcher and the text cache when on."""
    batcher, cache = state.batcher, state.query_cache
    encoder = snap.encoder
    assert encoder is not None  # _check refused a snapshot without one
    model = (snap.model_id, snap.model_spec)
    if query.kind == "vector":
        known = query.encode_alone(encoder)[0]
    else:
        known = cache.get(model, query.text()) if query.kind == "text" else None
    if batcher is None:
        xq = known[None, :] if known is not None else query.encode_alone(encoder)
        first = None
    else:
        index = snap.indexes[opts.target].index if batch_search else None
        job = Query(encoder, query.kind, None if known is not None else query.value, known)
        if index is not None:  # the batch runs this request's first search round too
            job.index, job.want = index.index, _depth(opts)
        vector, D, I = batcher.run(job, ticket)
        # The first round comes back whole (D and I) or not at all.
        xq, first = vector[None, :], (None if D is None or I is None else (D[None, :], I[None, :]))
    if query.kind == "text" and known is None:
        cache.put(model, query.text(), np.array(xq[0]))
    return xq, first


def run_search(
    state: SearchState,
    session_factory: sessionmaker,
    settings: Settings,
    query: QueryInput,
    opts: SearchOptions,
) -> tuple[SearchResponse, dict[str, float]]:
    """Encode (batched, cached), search (``index.candidates``: overfetch past deleted rows, filters and
    ``min_score``), hydrate, paginate. Returns the response and its stage timings in milliseconds
    (``encode`` includes a batch's search when batched: the two run as one step)."""
    t0 = time.perf_counter()
    timings = {"encode": 0.0, "search": 0.0, "hydrate": 0.0}
    with state.batcher.arriving() if state.batcher is not None else nullcontext() as ticket:
        snap = state.snapshot
        _check(snap, settings, opts)
        te = time.perf_counter()
        xq, first = _encode(state, snap, query, opts, not opts.filter, ticket)
        timings["encode"] = (time.perf_counter() - te) * 1000
    with session_factory() as session:
        where = filters.sql_clause(opts.filter, session.get_bind().dialect.name) if opts.filter else None
        found = _Candidates(session, where, timings)
        ts = time.perf_counter()
        allowed = _allowed(session, settings, opts, where)
        try:
            loaded, hits = _ranked(snap, xq, opts, found, allowed, first)
        except NotReady as e:
            raise SearchRefused(503, "nothing_indexed", str(e)) from e
        timings["search"] = (time.perf_counter() - ts) * 1000 - timings["hydrate"]
    return _response(snap, loaded, opts, found, hits, t0), timings


def _response(snap: Snapshot, loaded: LoadedIndex, opts: SearchOptions, found: _Candidates, hits, t0: float):
    page = hits[opts.offset :]
    data = []
    for score, item_id in page:
        item = found.rows[item_id]
        data.append(
            SearchResult(
                id=item.id,
                external_id=item.external_id,
                score=score,
                text=item.text,
                image_url=item_image_url(item.id) if item.image_path else None,
                metadata=item.meta,
            )
        )
    return SearchResponse(
        data=data,
        count=len(data),
        model=ModelInfo(id=snap.model_id, spec=snap.model_spec),
        index=IndexInfo(id=loaded.id, modality=opts.target, ntotal=loaded.index.ntotal),
        took_ms=round((time.perf_counter() - t0) * 1000, 3),
    )
