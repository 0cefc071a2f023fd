"""Every index kind built from shards, checked against brute force; streaming, dedupe, save/load, mmap."""

import logging

import faiss
import numpy as np
import pytest

from index import builder, factory, store, tune
from index.shards import write_shard
from tests.helpers.index_data import (
    D_DIM,
    NQ,
    K,
    N,
    assert_matches_brute_force,
    db_ids,
    decoded,
    exhaustive,
    mixture,
    one_faiss_thread,
    plan_for,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_faiss_thread():
        yield


@pytest.mark.parametrize("kind", factory.KINDS)
def test_every_kind_holds_every_db_id(built, corpus, kind):
    ids = corpus[0]
    index = built[kind]
    assert index.ntotal == N and index.metric_type == faiss.METRIC_INNER_PRODUCT
    assert set(store.held_ids(index).tolist()) == set(ids.tolist())


@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "ivf_sq8", "ivf_pq"])
def test_exhaustive_search_equals_brute_force_over_stored_vectors(built, corpus, kind):
    _, _, xq = corpus
    index = built[kind]
    exhaustive(index)
    row_ids, xr = decoded(index)
    D, I = index.search(xq, K)
    assert_matches_brute_force(D, I, xq, row_ids, xr, K)


def test_flat_codes_are_the_vectors(built, corpus):
    ids, xb, _ = corpus
    for kind in ("flat", "hnsw", "ivf_flat"):
        row_ids, xr = decoded(built[kind])
        order = np.argsort(row_ids)
        np.testing.assert_array_equal(xr[order], xb[np.argsort(ids)])


def test_hnsw_finds_the_true_neighbours(built, corpus):
    ids, xb, xq = corpus
    index = built["hnsw"]
    faiss.ParameterSpace().set_index_parameter(index, "efSearch", 128)
    _, I = index.search(xq, K)
    truth = ids[np.argsort(-(xq @ xb.T), axis=1)[:, :K]]
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(I.tolist(), truth.tolist(), strict=True)])
    assert recall >= 0.97


def test_builder_sets_a_sane_default_search_param(corpus):
    ids, xb, _ = corpus
    index = builder.build_index(builder.array_shards(ids[:2000], xb[:2000]), D_DIM, plan_for("ivf_flat", 2000))
    assert faiss.extract_index_ivf(index).nprobe == min(16, faiss.extract_index_ivf(index).nlist)


@pytest.mark.parametrize(
    "kind, n, d",
    [("flat", N, D_DIM), ("hnsw", N, D_DIM), ("ivf_flat", N, D_DIM), ("ivf_sq8", N, D_DIM), ("ivf_pq", 2000, 16)],
)  # ivf_pq is small: OPQ is slow
def test_stream_build_from_shards_equals_in_memory_build(tmp_path, kind, n, d):
    x = mixture(n + NQ, d, seed=7)
    ids, x16, xq = db_ids(n), x[:n].astype(np.float16), x[n:]  # shards store float16: compare like with like
    for a, b in [(0, 1234), (1234, 1235), (1235, n - 700), (n - 700, n)]:  # uneven cuts, a one-row shard
        write_shard(tmp_path, ids[a:b], x16[a:b])
    plan = plan_for(kind, n, d)
    with one_faiss_thread():  # HNSW's parallel insertion order is not deterministic
        streamed = builder.build_index(builder.shard_reader(tmp_path), d, plan, seed=3)
        in_memory = builder.build_index(builder.array_shards(ids, x16.astype(np.float32), n), d, plan, seed=3)
    Ds, Is = streamed.search(xq, K)
    Dm, Im = in_memory.search(xq, K)
    np.testing.assert_array_equal(Is, Im)
    np.testing.assert_array_equal(Ds, Dm)


def test_training_sample_is_uniform_and_sized(corpus):
    ids, xb, _ = corpus
    _, sample = builder._scan(builder.array_shards(ids, xb, 700), D_DIM, 1000, seed=0, progress=None)
    assert sample.shape == (1000, D_DIM)
    rows = {v.tobytes(): i for i, v in enumerate(xb)}
    picked = np.array([rows[v.tobytes()] for v in sample])
    assert len(np.unique(picked)) == 1000 and np.all(np.diff(picked) > 0)  # distinct rows, in stream order
    assert 0.4 < np.mean(picked < N // 2) < 0.6  # drawn from the whole stream, not its head


def test_a_later_shard_wins_when_an_id_repeats(tmp_path):
    rng = np.random.default_rng(5)
    x = mixture(300, 16, seed=5)
    ids = db_ids(300)
    write_shard(tmp_path, ids[:200], x[:200])
    fresh = mixture(50, 16, seed=6)
    write_shard(tmp_path, ids[150:200], fresh)  # re-embedded items
    write_shard(tmp_path, ids[200:], x[200:])
    index = builder.build_index(builder.shard_reader(tmp_path), 16, plan_for("flat", 300, 16))
    assert index.ntotal == 300
    for j in rng.choice(50, 5, replace=False):
        np.testing.assert_allclose(index.reconstruct(int(ids[150 + j])), fresh[j], atol=1e-3)


def test_shards_that_change_between_passes_are_an_error(corpus):
    ids, xb, _ = corpus
    calls = []

    def growing():
        calls.append(1)
        yield ids[:1000], xb[:1000]
        if len(calls) > 1:
            yield ids[1000:1100], xb[1000:1100]

    with pytest.raises(RuntimeError, match="changed"):
        builder.build_index(growing, D_DIM, plan_for("flat"))


def test_bad_input_is_rejected(corpus):
    ids, xb, _ = corpus
    with pytest.raises(ValueError, match="d=64"):
        builder.build_index(builder.array_shards(ids, xb), 64, plan_for("flat", d=64))
    with pytest.raises(ValueError, match="empty"):
        builder.build_index(lambda: iter(()), D_DIM, plan_for("ivf_flat"))
    assert builder.build_index(lambda: iter(()), D_DIM, plan_for("flat", 0)).ntotal == 0


def test_memory_is_logged_before_the_build_and_progress_reported(corpus, caplog):
    ids, xb, _ = corpus
    seen = []
    with caplog.at_level(logging.INFO, logger="index.builder"):
        builder.build_index(
            builder.array_shards(ids[:2000], xb[:2000], 500),
            D_DIM,
            plan_for("ivf_sq8", 2000),
            progress=lambda stage, done, total: seen.append((stage, done, total)),
        )
    assert "building IDMap2,IVF32,SQ8" in caplog.text and "MiB" in caplog.text
    stages = [s for s, _, _ in seen]
    assert stages.index("scan") < stages.index("train") < stages.index("add")
    assert seen[-1] == ("add", 2000, 2000)


@pytest.mark.parametrize("kind", factory.KINDS)
def test_save_and_load_round_trip(tmp_path, built, corpus, kind):
    _, _, xq = corpus
    index = built[kind]
    plan = plan_for(kind)
    if plan.search_param:
        tune.set_search_param(index, plan.search_param, plan.candidates[2])
    out = store.publish(index, tmp_path / "indexes" / "7", {"model_id": 3})
    assert sorted(p.name for p in (tmp_path / "indexes").iterdir()) == ["7"]  # no temp folder left
    files = ["index.json", "part-000.faiss", "part-001.faiss"] if plan.parts > 1 else ["index.faiss", "index.json"]
    assert sorted(p.name for p in out.iterdir()) == files
    D0, I0 = index.search(xq, K)
    loaded = store.load(out)
    assert loaded.meta["model_id"] == 3 and loaded.meta["metric"] == "ip" and loaded.ntotal == N
    assert loaded.meta["factory"].startswith("IDMap2,")
    if plan.search_param:
        refine = {"k_factor": factory.refine_k_factor(plan)} if "Refine" in plan.factory else {}
        assert loaded.meta["search_params"] == {plan.search_param: plan.candidates[2], **refine}
    D1, I1 = loaded.index.search(xq, K)  # FAISS stores nprobe / efSearch with the index
    np.testing.assert_array_equal(I1, I0)
    np.testing.assert_array_equal(D1, D0)
    with pytest.raises(FileExistsError):
        store.publish(index, out, {})


def test_fast_scan_lists_load_into_ram_when_mapping_is_asked(tmp_path, built, corpus):
    """FAISS cannot map fast-scan (block) lists: it reads them, and the index searches as before."""
    _, _, xq = corpus
    out = store.publish(built["ivf_fs_refine"], tmp_path / "1", {})
    mapped = store.load(out, mmap=True).index
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(mapped).invlists)
    assert isinstance(lists, faiss.BlockInvertedLists)
    np.testing.assert_array_equal(mapped.search(xq, K)[1], built["ivf_fs_refine"].search(xq, K)[1])


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_sq8", "ivf_pq"])
def test_ivf_indexes_load_memory_mapped(tmp_path, built, corpus, kind):
    _, _, xq = corpus
    index = built[kind]
    out = store.publish(index, tmp_path / "1", {})
    mapped = store.load(out, mmap=True).index
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(mapped).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists) and lists.read_only  # a view of index.faiss
    D0, I0 = index.search(xq, K)
    D1, I1 = mapped.search(xq, K)
    np.testing.assert_array_equal(I1, I0)
    np.testing.assert_array_equal(D1, D0)
    # (no add here: adding to read-only lists throws inside an OpenMP region and aborts the process)


def test_mmap_of_a_graph_index_reads_it_into_ram(tmp_path, built, corpus, caplog):
    out = store.publish(built["hnsw"], tmp_path / "1", {})
    with caplog.at_level(logging.INFO, logger="index.store"):
        loaded = store.load(out, mmap=True)
    assert "not an IVF index" in caplog.text
    xq = corpus[2]
    np.testing.assert_array_equal(loaded.index.search(xq, K)[1], built["hnsw"].search(xq, K)[1])


def test_hnsw_gets_every_vector_in_one_add(corpus, monkeypatch):
    """FAISS HNSW links a worse graph when vectors arrive in several adds (see the builder)."""
    ids, xb, _ = corpus
    calls = []
    real = faiss.IndexIDMap2.add_with_ids

    def spy(self, x, xids):
        calls.append(len(xids))
        return real(self, x, xids)

    monkeypatch.setattr(faiss.IndexIDMap2, "add_with_ids", spy)
    seen = []
    index = builder.build_index(
        builder.array_shards(ids[:3000], xb[:3000], 700),
        D_DIM,
        plan_for("hnsw", 3000),
        progress=lambda stage, done, total: seen.append((stage, done, total)),
    )
    assert calls == [3000] and index.ntotal == 3000
    assert seen[-1] == ("add", 3000, 3000)
    builder.build_index(builder.array_shards(ids[:3000], xb[:3000], 700), D_DIM, plan_for("ivf_flat", 3000))
    assert calls[1:] == [700, 700, 700, 700, 200]  # other kinds stream shard by shard
