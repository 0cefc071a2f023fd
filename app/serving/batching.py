"""Dynamic batching: concurrent queries are encoded, and searched, a micro-batch at a time.

One query on its own uses the CPU badly: a text encoder's forward pass on one row costs nearly
what it costs on sixteen, and an exact search reads the whole matrix of vectors from memory
for each query (a matrix-vector product) where sixteen share one read (a matrix product).
So requests hand their query to :class:`Batcher`, whose one thread takes everything queued
(up to ``CROSSMODAL_BATCH_MAX_SIZE``), encodes it in one forward pass, searches it in one
product, and hands each request its row.

A request alone is never held back: the thread waits up to ``CROSSMODAL_BATCH_WINDOW_MS`` for
more only while other searches are in flight, so at concurrency 1 the cost is one hand-off
between threads. Under load batches form by themselves (what arrives during one batch is the
next), and the window only rounds them up.

Repeated text queries skip the encoder: :class:`QueryCache`, an LRU keyed by model and text.
Batches never mix models or indexes: a promotion swaps the snapshot, and items queued under
the old pair are run as their own batch on the old pair.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from cachetools import LRUCache

from index.candidates import first_round

if TYPE_CHECKING:
    import faiss

    from crossmodal_kernel.encoder import Encoder

Answer = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]  # vector, and the first search round


class QueryCache:
    """Text query vectors by (model, text), least recently used out first; safe across threads."""

    def __init__(self, size: int, on_lookup: Callable[[bool], None] = lambda hit: None):
        self._cache: LRUCache | None = LRUCache(maxsize=size) if size > 0 else None
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self.on_lookup = on_lookup  # metrics

    def get(self, model: object, text: str) -> np.ndarray | None:
        if self._cache is None:
            return None
        with self._lock:
            vector = self._cache.get((model, text))
            if vector is None:
                self.misses += 1
            else:
                self.hits += 1
        self.on_lookup(vector is not None)
        return vector

    def put(self, model: object, text: str, vector: np.ndarray) -> None:
        if self._cache is not None:
            vector.setflags(write=False)  # shared by every request that hits it
            with self._lock:
                self._cache[(model, text)] = vector


@dataclass(eq=False)
class Ticket:
    arrived: bool = False


@dataclass(eq=False)
class Query:
    """One request's share of a batch: what to encode (or its vector) and how many results it wants."""

    encoder: Encoder
    kind: str  # "text" or "image"
    payload: object  # the text or the PIL image; None when ``vector`` is known (a cache hit)
    vector: np.ndarray | None = None
    index: faiss.Index | None = None  # the faiss index to search, or None to only encode
    want: int = 0  # the results the request ranks; the first round's depth is the index's to choose
    future: Future = field(default_factory=Future)

    def joins(self, other: Query) -> bool:
        """Whether ``other`` can run in the same batch: same encoder, kind and index (by identity)."""
        return self.encoder is other.encoder and self.kind == other.kind and self.index is other.index


class Batcher:
    """Runs queued :class:`Query` objects in batches on one thread; see the module docstring."""

    def __init__(self, window_ms: float, max_size: int, on_batch: Callable[[int], None] = lambda size: None):
        self.on_batch = on_batch  # metrics
        self.window = window_ms / 1000
        self.max_size = max(1, max_size)
        self._queue: deque[Query] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.approaching = 0  # searches started that have not reached the queue yet
        self._running = 0  # batches being executed (on the batcher thread or inline)
        self.batches = self.queries = 0

    @contextmanager
    def arriving(self) -> Iterator[Ticket]:
        """Around a search from its start: while it is on its way, a forming batch may wait for it."""
        ticket = Ticket()
        with self._cond:
            self.approaching += 1
        try:
            yield ticket
        finally:
            self._arrived(ticket)

    def _arrived(self, ticket: Ticket) -> None:
        with self._cond:
            if not ticket.arrived:
                ticket.arrived = True
                self.approaching -= 1

    def run(self, query: Query, ticket: Ticket | None = None) -> Answer:
        """``(vector (d,), D (depth,), I (depth,))`` for one query; D and I are None without an index."""
        if ticket is not None:
            self._arrived(ticket)
        with self._cond:
            if self._stopped:
                raise RuntimeError("the batcher is stopped")
            # Nothing queued, nothing running, nobody on the way: run it here, sparing two thread hand-offs.
            alone = not self._queue and not self._running and not self.approaching
            if alone:
                self._running += 1
            else:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="crossmodal-batcher", daemon=True)
                    self._thread.start()
                self._queue.append(query)
                self._cond.notify()
        if not alone:
            return query.future.result()
        try:
            answer = _execute([query])[0]
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify()
        self._count(1)
        return answer

    def _count(self, size: int) -> None:
        self.batches += 1
        self.queries += size
        self.on_batch(size)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                results = _execute(batch)
            except BaseException as e:  # every waiting request hears of it
                for q in batch:
                    q.future.set_exception(e)
                continue
            finally:
                with self._cond:
                    self._running -= 1
            self._count(len(batch))
            for q, result in zip(batch, results, strict=True):
                q.future.set_result(result)

    def _next_batch(self) -> list[Query] | None:
        with self._cond:
            while not self._queue and not self._stopped:
                self._cond.wait()
            if self._stopped and not self._queue:
                return None
            self._running += 1  # from here until the batch is done (counted down by _loop)
            batch = self._take(self._queue.popleft())
            deadline = time.monotonic() + self.window
            # wait for more only while other searches are on their way here
            while len(batch) < self.max_size and self.approaching > 0 and not self._stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
                batch.extend(self._take(None, len(batch), batch[0]))
            return batch

    def _take(self, first: Query | None, have: int = 0, like: Query | None = None) -> list[Query]:
        """``first`` and the queued queries that can join it, up to the batch size (lock held)."""
        batch = [first] if first is not None else []
        like = like or first
        room = self.max_size - have - len(batch)
        if like is None or room <= 0:
            return batch
        rest: deque[Query] = deque()
        while self._queue and room > 0:
            q = self._queue.popleft()
            if like.joins(q):
                batch.append(q)
                room -= 1
            else:
                rest.append(q)
        self._queue.extendleft(reversed(rest))
        return batch


def _execute(batch: list[Query]) -> list[Answer]:
    """Encode the rows without a vector in one pass, then search every row in one product."""
    head = batch[0]
    todo = [q for q in batch if q.vector is None]
    if todo:
        encode = head.encoder.encode_texts if head.kind == "text" else head.encoder.encode_images
        payloads: list[Any] = [q.payload for q in todo]  # texts or PIL images, as the batch's kind says
        vectors = encode(payloads)
        for q, v in zip(todo, vectors, strict=True):
            q.vector = v
    rows = [_vector(q) for q in batch]
    xq = np.stack(rows).astype(np.float32, copy=False)
    if head.index is None:
        return [(v, None, None) for v in rows]
    D, I = first_round(head.index, xq, max(q.want for q in batch))
    return [(v, D[r], I[r]) for r, v in enumerate(rows)]


def _vector(q: Query) -> np.ndarray:
    assert q.vector is not None  # known on arrival, or encoded by _execute before it searches
    return q.vector
