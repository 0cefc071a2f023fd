"""One search request, end to end: encode, search (filtered, deduplicated), hydrate, rank, paginate.

The HTTP routes (``app.api.routes.search``, the clip-retrieval compatible ones) parse requests
into :class:`~app.serving.schemas.SearchOptions` and a :class:`QueryInput`, and call :func:`run_search`.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np
from PIL import Image
from sqlalchemy import Row
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import crud, lexical
from app.serving import filters, hybrid, relevance
from app.serving.batching import Query, QueryCache
from app.serving.schemas import (
    HitParts,
    IndexInfo,
    Mode,
    ModelInfo,
    RankPart,
    SearchOptions,
    SearchResponse,
    SearchResult,
)
from app.serving.state import LoadedIndex, NotReady, SearchState, Snapshot, search_index
from index.candidates import VectorsUnavailable
from index.dedupe import MAX_DEDUPE
from training.calibration import LEVEL_DEPTH

if TYPE_CHECKING:
    from crossmodal_kernel.encoder import Encoder


@runtime_checkable
class Combined(Protocol):
    """A composite query (``app.serving.composite.Composite``): the words its lexical list matches,
    and its one vector, made in the request's snapshot."""

    @property
    def words(self) -> str: ...

    def vector(self, snap: Snapshot, cache: QueryCache) -> np.ndarray: ...


@dataclass(frozen=True)
class QueryInput:
    """What a request searches with: a text, a decoded image, a vector already in the space, or a
    composite of weighted parts (:class:`Combined`)."""

    kind: Literal["text", "image", "vector", "composite"]
    value: object

    def words(self) -> str | None:
        """What lexical and hybrid modes match: a text query's text, a composite's words; None for others."""
        if self.kind == "text":
            return self.text()
        return self.combined().words if self.kind == "composite" else None

    def combined(self) -> Combined:
        """The parts of a ``composite`` query."""
        assert self.kind == "composite" and isinstance(self.value, Combined)  # composite.run_composite's
        return self.value

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
    """Hydrated, filtered candidates of one request: ``keep`` for the overfetch loop, and the rows.

    With ``ids_only`` (hybrid mode, whose vector list runs a window deep) ``keep`` reads only which
    ids are live and pass the filter, and :meth:`hydrate` fetches the rows of the page alone."""

    def __init__(self, session: Session, where, timings: dict[str, float], ids_only: bool = False):
        self.session, self.where, self.timings, self.ids_only = session, where, timings, ids_only
        self.rows: dict[int, Row] = {}
        self.live: set[int] = set()
        self.seen: set[int] = set()  # ids looked up already (a second search of the request reuses them)

    def keep(self, ids: np.ndarray) -> np.ndarray:
        """An item deleted since indexing (or failing the filter) is not a result."""
        th = time.perf_counter()
        todo = [i for i in ids.tolist() if i not in self.seen]
        self.seen.update(todo)
        if self.ids_only:
            self.live.update(crud.live_ids(self.session, todo, self.where) if todo else ())
            known: set[int] | dict[int, Row] = self.live
        else:
            self.rows.update(crud.get_hits(self.session, todo, self.where) if todo else {})
            known = self.rows
        self.timings["hydrate"] += (time.perf_counter() - th) * 1000
        return np.fromiter((int(i) in known for i in ids), dtype=bool, count=len(ids))

    def hydrate(self, ids: list[int]) -> None:
        """The rows of ``ids`` not fetched yet (those deleted meanwhile stay absent)."""
        missing = [i for i in ids if i not in self.rows]
        if missing:
            th = time.perf_counter()
            self.rows.update(crud.get_hits(self.session, missing, self.where))
            self.timings["hydrate"] += (time.perf_counter() - th) * 1000


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
        _check_dedupe(opts)
        depth = min(depth, MAX_DEDUPE // 2)
    try:
        loaded, scores, ids = search_index(
            snap, xq, opts.target, depth, keep=found.keep, min_score=opts.min_score, allowed=allowed,
            dedupe=opts.dedupe, first=first,
        )  # fmt: skip
    except VectorsUnavailable as e:
        raise SearchRefused(400, "dedupe_unsupported", str(e)) from e
    return loaded, list(zip(scores.tolist(), ids.tolist(), strict=True))[:want]


def _check_dedupe(opts: SearchOptions) -> None:
    if opts.dedupe is not None and opts.offset + opts.k > MAX_DEDUPE // 2:
        raise SearchRefused(400, "dedupe_too_deep", f"dedupe works on the first {MAX_DEDUPE // 2} results (offset + k)")


def _depth(opts: SearchOptions) -> int:
    """How many ranked candidates a request starts from: its page and everything before it, plus a
    few past it, so that equal scores at the cut are ordered by id on every page alike."""
    return opts.offset + opts.k + TIE_MARGIN


def _encode(state: SearchState, snap: Snapshot, query: QueryInput, opts: SearchOptions, depth: int | None, ticket):
    """``(xq (1, d), first round (D, I) or None)``: through the batcher and the text cache when on; the
    batch searches the first round ``depth`` deep too, unless ``depth`` is None."""
    batcher, cache = state.batcher, state.query_cache
    encoder = snap.encoder
    assert encoder is not None  # _check refused a snapshot without one
    model = (snap.model_id, snap.model_spec)
    if query.kind == "vector":
        known = query.encode_alone(encoder)[0]
    elif query.kind == "composite":  # its parts, encoded and combined in this request's snapshot
        known = query.combined().vector(snap, cache)
    else:
        known = cache.get(model, query.text()) if query.kind == "text" else None
    if batcher is None:
        xq = known[None, :] if known is not None else query.encode_alone(encoder)
        first = None
    else:
        index = snap.indexes[opts.target].index if depth is not None else None
        job = Query(encoder, query.kind, None if known is not None else query.value, known)
        if index is not None and depth is not None:  # the batch runs this request's first search round too
            job.index, job.want = index.index, depth
        vector, D, I = batcher.run(job, ticket)
        # The first round comes back whole (D and I) or not at all.
        xq, first = vector[None, :], (None if D is None or I is None else (D[None, :], I[None, :]))
    if query.kind == "text" and known is None:
        cache.put(model, query.text(), np.array(xq[0]))
    return xq, first


def _mode(query: QueryInput, opts: SearchOptions, settings: Settings) -> Mode:
    """The mode a request ranks by: its own, else the configured one for a text query, vector otherwise."""
    if opts.mode is None:
        return settings.search_mode if query.kind == "text" else "vector"
    if opts.mode != "vector" and query.words() is None:
        raise SearchRefused(
            422,
            "mode_needs_text",
            f"mode {opts.mode!r} matches the words of a text query; an {query.kind} query can only use mode 'vector'",
        )
    return opts.mode


def run_search(
    state: SearchState,
    session_factory: sessionmaker,
    settings: Settings,
    query: QueryInput,
    opts: SearchOptions,
) -> tuple[SearchResponse, dict[str, float]]:
    """Encode (batched, cached), search (``index.candidates``: overfetch past deleted rows, filters and
    ``min_score``), hydrate, paginate. Returns the response and its stage timings in milliseconds
    (``encode`` includes a batch's search when batched: the two run as one step). Lexical and hybrid
    modes: :func:`_run_words`."""
    t0 = time.perf_counter()
    timings = {"encode": 0.0, "search": 0.0, "hydrate": 0.0}
    mode = _mode(query, opts, settings)
    if mode != "vector":
        return _run_words(state, session_factory, settings, query, opts, mode, t0, timings), timings
    with state.batcher.arriving() if state.batcher is not None else nullcontext() as ticket:
        snap = state.snapshot
        _check(snap, settings, opts)
        mapping = _relevance(snap, query, opts)
        te = time.perf_counter()
        xq, first = _encode(state, snap, query, opts, None if opts.filter else _depth(opts), ticket)
        timings["encode"] = (time.perf_counter() - te) * 1000
    with session_factory() as session:
        where = filters.sql_clause(opts.filter, session.get_bind().dialect.name) if opts.filter else None
        found = _Candidates(session, where, timings)
        ts = time.perf_counter()
        allowed = _allowed(session, settings, opts, where)
        try:
            level = _level(snap, xq, opts, found, first) if mapping is not None else None
            cut = relevance.min_score_with(mapping, level, opts.min_score, opts.min_relevance)  # one cosine cutoff
            loaded, hits = _ranked(snap, xq, opts.model_copy(update={"min_score": cut}), found, allowed, first)
        except NotReady as e:
            raise SearchRefused(503, "nothing_indexed", str(e)) from e
        timings["search"] = (time.perf_counter() - ts) * 1000 - timings["hydrate"]
    hits = relevance.at_least(mapping, level, hits, opts.min_relevance)
    page = [hybrid.Ranked(item_id, score, None, None) for score, item_id in hits[opts.offset :]]
    judged = dict(zip([r.id for r in page], relevance.of_scores(mapping, level, [r.score for r in page]), strict=True))
    info = snap.relevance.info(query.kind, opts.target.value)
    return relevance.attach(_response(snap, loaded, opts, "vector", found.rows, page, t0), judged, info), timings


def _relevance(snap: Snapshot, query: QueryInput, opts: SearchOptions):
    """The calibration map for this query's direction (None: relevance is null); ``min_relevance`` without one
    is refused."""
    mapping, why = snap.relevance.mapping(query.kind, opts.target.value)
    if mapping is None and opts.min_relevance is not None:
        raise SearchRefused(422, "relevance_unavailable", f"min_relevance needs a calibrated relevance: {why}")
    return mapping


def _level(snap: Snapshot, xq: np.ndarray, opts: SearchOptions, found: _Candidates, first) -> float | None:
    """The query's level: the mean of its best cosines over the live items of the searched index, whatever
    the filter, what its relevance is judged against (``app.serving.relevance``). The batch's first round
    serves when it ran deep enough; without a filter the request's own lookups do (the ranking reuses them)."""
    keep = found.keep if found.where is None else _Candidates(found.session, None, found.timings, True).keep
    _, scores, _ = search_index(snap, xq, opts.target, LEVEL_DEPTH, keep=keep, first=first)
    return float(scores.astype(np.float64).mean()) if len(scores) else None


def _run_words(
    state: SearchState,
    session_factory: sessionmaker,
    settings: Settings,
    query: QueryInput,
    opts: SearchOptions,
    mode: Mode,
    t0: float,
    timings: dict[str, float],
) -> SearchResponse:
    """Lexical mode (the lexical list alone) and hybrid mode (the vector and lexical lists, each
    ``CROSSMODAL_HYBRID_WINDOW`` deep, fused): then ``min_score``, ``dedupe`` and the page
    (``app.serving.hybrid``)."""
    window, words = settings.hybrid_window, lexical.terms(query.words() or "")
    xq = first = None
    with state.batcher.arriving() if state.batcher is not None and mode == "hybrid" else nullcontext() as ticket:
        snap = state.snapshot
        _check(snap, settings, opts)
        _check_dedupe(opts)
        mapping = _relevance(snap, query, opts)
        where = filters.sql_clause(opts.filter, session_factory.kw["bind"].dialect.name) if opts.filter else None
        ahead = _lexical_ahead(state, session_factory, words, opts, where, window) if mode == "hybrid" else None
        if mode == "hybrid" or mapping is not None:  # lexical mode encodes the query for relevance alone
            te = time.perf_counter()
            depth = None if opts.filter or mode != "hybrid" else window
            xq, first = _encode(state, snap, query, opts, depth, ticket)
            timings["encode"] = (time.perf_counter() - te) * 1000
    loaded = snap.indexes[opts.target]
    vectors = _stored_vectors(loaded)
    weight: float | None = None  # hybrid: this query's vector weight
    with session_factory() as session:
        found = _Candidates(session, where, timings, ids_only=True)
        ts = time.perf_counter()
        try:
            level = _level(snap, xq, opts, found, first) if mapping is not None and xq is not None else None
            judge = relevance.Judgement(mapping, xq, level, vectors, opts.min_relevance)
            if mode == "hybrid":
                vector = _vector_list(snap, xq, opts, found, _allowed(session, settings, opts, where), window, first)
                lex = ahead.result() if ahead is not None else []
                weight = hybrid.vector_weight(
                    settings.hybrid_vector_weight, settings.hybrid_relevance_swing, judge.first(vector)
                )
                fused = hybrid.fuse(vector, lex, settings.hybrid_fusion, settings.hybrid_rrf_k, weight)
                ranked = hybrid.cut(judge.keep(fused), opts.min_score, opts.dedupe, vectors)
            else:
                ranked = _lexical_ranked(session, words, opts, where, vectors, judge.keep)
        except NotReady as e:
            raise SearchRefused(503, "nothing_indexed", str(e)) from e
        except VectorsUnavailable as e:
            raise SearchRefused(400, "dedupe_unsupported", str(e)) from e
        page = ranked[opts.offset : opts.offset + opts.k]
        found.hydrate([r.id for r in page])
        judged = judge.note(page)
        timings["search"] = (time.perf_counter() - ts) * 1000 - timings["hydrate"]
    info = snap.relevance.info(query.kind, opts.target.value)
    response = relevance.attach(_response(snap, loaded, opts, mode, found.rows, page, t0), judged, info)
    response.vector_weight = weight
    return response


def _lexical_ahead(
    state: SearchState, session_factory: sessionmaker, words: list[str], opts: SearchOptions, where, depth: int
):
    """Hybrid mode's lexical list, read on the state's lexical pool while this thread encodes the query and
    reads the vector list: the database and the encoder both let go of the GIL, so on two cores they overlap.
    ``where`` (the filter's clause, or None) is the one the vector list uses too."""

    def read() -> list[tuple[int, float]]:
        with session_factory() as session:
            return lexical.search(session, words, opts.target.value, depth, where)

    return state.lexical_pool.submit(read)


def _vector_list(snap: Snapshot, xq, opts: SearchOptions, found: _Candidates, allowed, window: int, first):
    """Hybrid mode's vector list: the best ``window`` (id, cosine) pairs passing the filter, ties by id."""
    _, scores, ids = search_index(snap, xq, opts.target, window, keep=found.keep, allowed=allowed, first=first)
    return list(zip(ids.tolist(), scores.tolist(), strict=True))


def _lexical_ranked(
    session: Session, words: list[str], opts: SearchOptions, where, vectors, keep=lambda ranked: ranked
) -> list[hybrid.Ranked]:
    """Lexical mode's ranking, deep enough for the page: one query, or with ``dedupe`` (or ``min_relevance``,
    ``keep``) a deeper one while the page is short (up to the first ``MAX_DEDUPE`` matches, as in vector mode)."""
    want = opts.offset + opts.k
    limit = want if opts.dedupe is None else min(2 * want, MAX_DEDUPE)
    while True:
        got = lexical.search(session, words, opts.target.value, limit, where)
        ranked = hybrid.cut(keep(hybrid.lexical_only(got)), opts.min_score, opts.dedupe, vectors)
        below = opts.min_score is not None and bool(got) and hybrid.lexical_score(got[-1][1]) < opts.min_score
        if len(ranked) >= want or len(got) < limit or limit >= MAX_DEDUPE or below:
            return ranked
        limit = min(2 * limit, MAX_DEDUPE)


def _stored_vectors(loaded: LoadedIndex) -> hybrid.Vectors:
    """The stored vectors of those ids the index holds (an item not embedded yet has none)."""

    def vectors(ids: list[int]) -> dict[int, np.ndarray]:
        index = loaded.index.index
        try:
            return dict(zip(ids, np.asarray(index.reconstruct_batch(np.asarray(ids, dtype=np.int64))), strict=True))
        except RuntimeError:  # some id is not in the index: one at a time
            found = {}
            for i in ids:
                try:
                    found[i] = np.asarray(index.reconstruct_batch(np.asarray([i], dtype=np.int64)))[0]
                except RuntimeError:
                    continue
            return found

    return vectors


def _response(
    snap: Snapshot, loaded: LoadedIndex, opts: SearchOptions, mode: Mode, rows: dict[int, Row], page, t0: float
) -> SearchResponse:
    data = []
    for hit in page:
        item = rows.get(hit.id)
        if item is None:  # deleted since the lexical list was read
            continue
        parts = None
        if mode != "vector":
            parts = HitParts(vector=_part(hit.vector), lexical=_part(hit.lexical))
        data.append(
            SearchResult(
                id=item.id,
                external_id=item.external_id,
                score=hit.score,
                text=item.text,
                image_url=item_image_url(item.id) if item.image_path else None,
                metadata=item.meta,
                parts=parts,
            )
        )
    return SearchResponse(
        data=data,
        count=len(data),
        mode=mode,
        model=ModelInfo(id=snap.model_id, spec=snap.model_spec),
        index=IndexInfo(id=loaded.id, modality=opts.target, ntotal=loaded.index.ntotal),
        took_ms=round((time.perf_counter() - t0) * 1000, 3),
    )


def _part(part: hybrid.Part | None) -> RankPart | None:
    return None if part is None else RankPart(rank=part.rank, score=part.score)
