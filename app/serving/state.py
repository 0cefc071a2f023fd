"""The per-process search state: the active model's encoder and its published indexes.

Endpoints read one immutable :class:`Snapshot` per request. A refresher thread checks the
database every ``CROSSMODAL_INDEX_REFRESH_SECONDS``; when the active model or an active index
changed it builds a whole new snapshot off to the side (loading a new encoder or index takes
seconds) and swaps it in with one assignment. So a request never sees a model paired with
another model's index, never waits for a load, and one that started on the old pair finishes
on it: the old pair serves until the swap, in-flight requests hold their snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np
from sqlalchemy.orm import sessionmaker

from app.config import Settings
from app.db import crud
from app.encoders import load_encoder
from app.runtime import faiss_gpu
from app.serving.batching import Batcher, QueryCache
from app.serving.relevance import Relevance, load_relevance
from index import store
from index.candidates import Keep, search
from index.factory import CPU_ONLY
from index.gpu import maybe_gpu
from index.partitioned import parts_of

if TYPE_CHECKING:
    from crossmodal_kernel.encoder import Encoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedIndex:
    id: int
    index: store.PublishedIndex


@dataclass(frozen=True)
class Snapshot:
    model_id: int | None
    model_spec: str
    encoder: Encoder | None
    indexes: dict[str, LoadedIndex] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # e.g. a new index that failed to load while the old one serves
    # the model's relevance calibration (app.serving.relevance), and which fit it is
    relevance: Relevance = field(default_factory=lambda: load_relevance(None))
    calibration_key: str | None = None


class NotReady(RuntimeError):
    """The service cannot answer searches yet; the message tells the user what to do."""


class SearchState:
    def __init__(self, settings: Settings, session_factory: sessionmaker, encoder_factory=None):
        self.settings = settings
        self.session_factory = session_factory
        self._encoder_factory = encoder_factory or _default_encoder_factory(settings)
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._stop = threading.Event()
        self._unloadable: dict[int, str] = {}  # index id -> why it failed (not retried while the row stands)
        self._thread: threading.Thread | None = None
        self.batcher = Batcher(settings.batch_window_ms, settings.batch_max_size) if settings.batching else None
        self.query_cache = QueryCache(settings.query_cache_size)
        # Hybrid search reads its lexical list here while the request's thread encodes the query.
        self.lexical_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="crossmodal-lexical")
        self.snapshot = Snapshot(model_id=None, model_spec=settings.model_spec, encoder=None)

    def start(self) -> None:
        """Refresh now (before taking traffic), then keep refreshing on a thread of its own."""
        self.refresh(force=True)
        self._thread = threading.Thread(target=self._refresh_forever, name="crossmodal-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.batcher is not None:
            self.batcher.stop()
        self.lexical_pool.shutdown(wait=True)

    def _refresh_forever(self) -> None:
        while not self._stop.wait(max(self.settings.index_refresh_seconds, 0.1)):
            self.refresh()

    def refresh(self, force: bool = False) -> Snapshot:
        """Reload from the DB when the active model or an active index changed."""
        now = time.monotonic()
        if not force and now - self._checked_at < self.settings.index_refresh_seconds:
            return self.snapshot
        with self._lock:  # one loader at a time; others keep serving the current snapshot
            if not force and time.monotonic() - self._checked_at < self.settings.index_refresh_seconds:
                return self.snapshot
            try:
                self.snapshot = self._load(self.snapshot)
            except Exception:  # e.g. the DB is briefly unreachable: keep serving what is loaded
                log.exception("refreshing the search state failed; keeping the current snapshot")
            finally:
                self._checked_at = time.monotonic()
        return self.snapshot

    def _load(self, current: Snapshot) -> Snapshot:
        with self.session_factory() as session:
            model = crud.get_active_model(session)
            active = crud.get_active_indexes(session, model.id) if model else {}
            rows = {m: (r.id, r.path) for m, r in active.items()}
            calibration = dict(model.calibration or {}) if model else {}
        model_id = model.id if model else None
        calibration_key = calibration.get("fitted_at")
        spec = model.spec if model else self.settings.model_spec
        if (
            model_id == current.model_id
            and current.encoder is not None
            and {m: li.id for m, li in current.indexes.items()} == {m: rid for m, (rid, _) in rows.items()}
        ):
            if calibration_key != current.calibration_key:  # refitted: same pair, new relevance map
                return replace(current, relevance=load_relevance(calibration), calibration_key=calibration_key)
            return current
        if model is not None and not rows and current.indexes:
            # A newly promoted model without indexes yet: keep serving the old pair.
            return current
        problems: list[str] = []
        encoder = current.encoder if spec == current.model_spec else None
        if encoder is None:
            try:
                encoder = self._encoder_factory(spec)
            except Exception as e:  # surfaced through /readyz, not a crash
                log.exception("could not load model %s", spec)
                problems.append(f"model {spec!r} failed to load: {e}")
        indexes: dict[str, LoadedIndex] = {}
        # e.g. a failed ONNX export, served on PyTorch instead (crossmodal_kernel.onnx_encoder)
        warnings: list[str] = list(getattr(encoder, "runtime_warnings", ()))
        same_model = model_id == current.model_id
        for modality, (index_id, path) in rows.items():
            reuse = current.indexes.get(modality)
            if reuse is not None and reuse.id == index_id:
                indexes[modality] = reuse
                continue
            loaded = self._load_index(modality, index_id, path)
            if isinstance(loaded, LoadedIndex):
                indexes[modality] = loaded
            elif reuse is not None and same_model:  # a broken new version: the old one keeps serving
                indexes[modality] = reuse
                warnings.append(f"{loaded}; still serving {modality} index #{reuse.id}")
            else:
                problems.append(loaded)
        if not rows:
            problems.append("nothing indexed yet: run `crossmodal ingest SOURCE`")
        return Snapshot(model_id, spec, encoder, indexes, tuple(problems), tuple(warnings),
                        load_relevance(calibration), calibration_key)  # fmt: skip

    def _load_index(self, modality: str, index_id: int, path: str) -> LoadedIndex | str:
        """The published index, or why it cannot be loaded (remembered: a broken folder is not retried)."""
        if index_id in self._unloadable:
            return self._unloadable[index_id]
        try:
            published = store.load(Path(path), mmap=self.settings.index_mmap)
            for part in parts_of(published.index):
                ivf = faiss.try_extract_index_ivf(part)
                if ivf is not None:  # so that it can give back vectors (dedupe, exact filtered search)
                    try:
                        ivf.make_direct_map()
                    except RuntimeError as e:
                        log.warning("index %s cannot give back vectors (dedupe will be refused): %s", path, e)
            if faiss_gpu() and published.kind not in CPU_ONLY:  # FAISS has no GPU HNSW, fast-scan or refine
                published.index = maybe_gpu(published.index, log.info)
        except Exception as e:
            log.exception("could not load index %s", path)
            self._unloadable[index_id] = f"{modality} index #{index_id} failed to load: {type(e).__name__}: {e}"
            return self._unloadable[index_id]
        log.info("loaded %s index #%s (%d vectors)", modality, index_id, published.ntotal)
        return LoadedIndex(index_id, published)


def _default_encoder_factory(settings: Settings):
    def factory(spec: str):
        return load_encoder(settings, spec)

    return factory


def search_index(
    snapshot: Snapshot,
    xq: np.ndarray,
    target: str,
    want: int,
    keep: Keep | None = None,
    min_score: float | None = None,
    allowed: np.ndarray | None = None,
    dedupe: float | None = None,
    first: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[LoadedIndex, np.ndarray, np.ndarray]:
    """Top ``want`` (scores, ids) from the ``target`` modality's index for one query vector, best
    first and ties by id: only ids that pass ``keep``, score at least ``min_score`` and, with
    ``dedupe``, are no near-copy of a better one (``index.candidates.search``)."""
    loaded = snapshot.indexes.get(target)
    if loaded is None:
        raise NotReady(f"no {target} index yet: ingest data with {target}s (`crossmodal ingest SOURCE`)")
    D, I = search(
        loaded.index.index, xq, want, keep=keep, min_score=min_score, allowed=allowed, dedupe=dedupe, first=first
    )
    found = I[0] >= 0
    return loaded, D[0][found], I[0][found]
