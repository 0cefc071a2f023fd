"""Dynamic batching and the text query cache: same answers as one at a time, batches really form,
a lone query is not held back, batches never mix encoders or indexes, errors reach every waiter."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.serving.batching import Batcher, Query, QueryCache
from index import flat
from index.candidates import first_depth
from tests.helpers.service import ingested, wait_for


class FakeEncoder:
    """Texts to fixed random unit vectors; counts calls and rows; can block until released."""

    def __init__(self, d=8, gate: threading.Event | None = None, fail: bool = False):
        self.d, self.gate, self.fail = d, gate, fail
        self.calls: list[int] = []
        self.held: list[int] = []  # the rows of each call waiting at the gate

    def encode_texts(self, texts):
        if self.gate is not None:
            self.held.append(len(texts))
            self.gate.wait(timeout=30)
        if self.fail:
            raise RuntimeError("the encoder broke")
        self.calls.append(len(texts))
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(self.d) for t in texts]
        out = np.asarray(rows, dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    encode_images = encode_texts


def _open_once_all_arrived(gate: threading.Event, batcher: Batcher, encoders, n: int) -> None:
    """Open ``gate`` once each of ``n`` queries waits at it (a batch blocked in its encoder) or in the batcher's
    queue: the queued ones then form batches whatever the scheduling, rather than after a guessed delay."""
    wait_for(lambda: len(batcher._queue) + sum(sum(e.held) for e in encoders) == n)
    gate.set()


def _index(d=8, n=200):
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((n, d)).astype(np.float32)
    return flat.build_exact(xb / np.linalg.norm(xb, axis=1, keepdims=True), np.arange(n) + 1000)


def test_concurrent_queries_form_batches_and_get_the_answers_they_would_alone():
    gate = threading.Event()
    encoder, index = FakeEncoder(gate=gate), _index()
    batcher = Batcher(window_ms=1, max_size=64)
    texts = [f"query {i}" for i in range(24)]
    with ThreadPoolExecutor(24) as pool:
        futures = [
            pool.submit(batcher.run, Query(encoder, "text", t, index=index, want=5 + i)) for i, t in enumerate(texts)
        ]
        _open_once_all_arrived(gate, batcher, [encoder], len(texts))  # the first batch blocks; the rest queue
        answers = [f.result(timeout=30) for f in futures]
    batcher.stop()
    assert len(encoder.calls) < len(texts) and sum(encoder.calls) == len(texts)  # fewer forward passes
    alone = FakeEncoder()
    for i, (t, (vector, D, I)) in enumerate(zip(texts, answers, strict=True)):
        expected = alone.encode_texts([t])
        np.testing.assert_allclose(vector, expected[0], atol=1e-6)
        depth = first_depth(index.ntotal, 5 + i)  # the first round of the candidate loop, or wider
        D_ref, I_ref = flat.search(index, expected, depth)
        assert D.shape[0] >= depth and I[:depth].tolist() == I_ref[0].tolist()
        np.testing.assert_allclose(D[:depth], D_ref[0], atol=1e-5)


def test_a_lone_query_does_not_wait_for_the_window():
    batcher = Batcher(window_ms=100_000, max_size=64)  # a 100 s window: waiting it out would time out below
    with ThreadPoolExecutor(1) as pool:
        with batcher.arriving() as ticket:
            vector, D, I = pool.submit(batcher.run, Query(FakeEncoder(), "text", "alone"), ticket).result(timeout=20)
    batcher.stop()
    assert vector.shape == (8,) and D is None and I is None


def test_batches_never_mix_encoders_kinds_or_indexes():
    gate = threading.Event()
    first, second = FakeEncoder(gate=gate), FakeEncoder(gate=gate)
    a, b = _index(), _index()
    seen: list[set] = []
    batcher = Batcher(window_ms=1, max_size=64)
    import app.serving.batching as batching

    real = batching._execute

    def spy(batch):
        seen.append({(id(q.encoder), q.kind, id(q.index)) for q in batch})
        return real(batch)

    batching._execute = spy
    try:
        combos = [
            (first, "text", a),
            (second, "text", a),
            (first, "image", a),
            (first, "text", b),
            (first, "text", None),
        ]
        with ThreadPoolExecutor(20) as pool:
            futures = [
                pool.submit(batcher.run, Query(enc, kind, f"q{i}", index=idx, want=3))
                for i, (enc, kind, idx) in enumerate(combos * 4)
            ]
            _open_once_all_arrived(gate, batcher, [first, second], len(futures))
            for f in futures:
                f.result(timeout=30)
    finally:
        batching._execute = real
        batcher.stop()
    assert all(len(kinds) == 1 for kinds in seen) and sum(1 for _ in seen) >= len(combos)


def test_an_encoder_error_reaches_every_query_of_its_batch_and_the_batcher_goes_on():
    gate = threading.Event()
    broken = FakeEncoder(gate=gate, fail=True)
    batcher = Batcher(window_ms=1, max_size=64)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(batcher.run, Query(broken, "text", f"q{i}")) for i in range(8)]
        _open_once_all_arrived(gate, batcher, [broken], len(futures))
        for f in futures:
            with pytest.raises(RuntimeError, match="encoder broke"):
                f.result(timeout=30)
    assert batcher.run(Query(FakeEncoder(), "text", "after"))[0].shape == (8,)
    batcher.stop()


def test_the_query_cache_is_keyed_by_model_and_text_and_forgets_the_least_recent():
    cache = QueryCache(2)
    v = np.ones(4, np.float32)
    cache.put("model-1", "cat", v)
    assert cache.get("model-1", "cat") is v and cache.get("model-2", "cat") is None
    cache.put("model-1", "dog", v * 2)
    cache.get("model-1", "cat")  # cat is now the most recent
    cache.put("model-1", "eel", v * 3)
    assert cache.get("model-1", "dog") is None and cache.get("model-1", "cat") is not None
    assert not cache.get("model-1", "cat").flags.writeable  # shared between requests: read-only
    assert QueryCache(0).get("model-1", "cat") is None


@pytest.fixture(scope="module")
def clients(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batching")
    settings = ingested(tmp, f"sqlite:///{tmp / 'db.sqlite'}")
    on = TestClient(create_app(settings.model_copy(update={"batch_window_ms": 5.0})))
    off = TestClient(create_app(settings.model_copy(update={"batching": False, "query_cache_size": 0})))
    with on, off:
        yield on, off


def test_the_api_answers_the_same_with_batching_on_and_off(clients):
    on, off = clients
    bodies = [
        {"query": f"a {c} {s}", "k": k, "offset": o}
        for c in ("red", "blue")
        for s in ("circle", "square")
        for k, o in ((3, 0), (5, 2))
    ]
    with ThreadPoolExecutor(8) as pool:
        batched = list(pool.map(lambda b: on.post("/v1/search/text", json=b).json(), bodies * 2))
    for body, got in zip(bodies * 2, batched, strict=True):
        alone = off.post("/v1/search/text", json=body).json()
        assert [h["id"] for h in got["data"]] == [h["id"] for h in alone["data"]]
        np.testing.assert_allclose([h["score"] for h in got["data"]], [h["score"] for h in alone["data"]], atol=1e-5)
    state = on.app.state.search
    assert state.batcher.queries >= len(bodies) * 2
    hits = state.query_cache.hits
    for body in bodies:  # asked before: every one from the cache
        assert on.post("/v1/search/text", json=body).status_code == 200
    assert state.query_cache.hits == hits + len(bodies)
