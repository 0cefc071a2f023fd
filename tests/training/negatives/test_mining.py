import numpy as np
import pytest

from training.negatives.mining import HardNegativeBatchSampler, mine_hard_negatives


def unit_rows(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(anchors, candidates, matches, k, margin=None, band=(-1.0, 1.0)):
    """The same filters, one candidate at a time, in float64."""
    a = anchors / np.linalg.norm(anchors, axis=1, keepdims=True)
    c = candidates / np.linalg.norm(candidates, axis=1, keepdims=True)
    out = []
    for i in range(len(a)):
        scores = c.astype(np.float64) @ a[i].astype(np.float64)
        ceiling = band[1]
        if margin is not None and matches[i]:
            ceiling = min(ceiling, min(scores[j] for j in matches[i]) - margin)
        ok = [j for j in range(len(c)) if j not in matches[i] and band[0] <= scores[j] <= ceiling]
        out.append(sorted(ok, key=lambda j: -scores[j])[:k])
    return out


@pytest.fixture(scope="module")
def pairs():
    """300 anchors with one positive each (a noisy copy), plus 100 distractor candidates."""
    anchors = unit_rows(300, 12, seed=0)
    noise = unit_rows(300, 12, seed=1)
    candidates = np.concatenate([anchors + 0.3 * noise, unit_rows(100, 12, seed=2)])
    return anchors, candidates, {i: {i} for i in range(300)}


def test_exact_search_matches_brute_force(pairs):
    anchors, candidates, positives = pairs
    mined = mine_hard_negatives(anchors, candidates, positives, k=5, margin=None)
    assert mined == brute_force(anchors, candidates, positives, 5)


@pytest.mark.parametrize(("margin", "band"), [(0.05, (-1.0, 1.0)), (0.0, (0.2, 0.6)), (0.3, (0.1, 0.9))])
def test_band_and_margin_match_brute_force(pairs, margin, band):
    anchors, candidates, positives = pairs
    mined = mine_hard_negatives(anchors, candidates, positives, k=4, margin=margin, band=band)
    assert mined == brute_force(anchors, candidates, positives, 4, margin, band)
    a = anchors / np.linalg.norm(anchors, axis=1, keepdims=True)
    c = candidates / np.linalg.norm(candidates, axis=1, keepdims=True)
    for i, negatives in enumerate(mined):
        scores = c[negatives] @ a[i]
        assert i not in negatives
        assert np.all(np.diff(scores) <= 1e-6)  # hardest first
        assert np.all((scores >= band[0] - 1e-6) & (scores <= band[1] + 1e-6))
        assert np.all(scores <= c[i] @ a[i] - margin + 1e-6)


def test_keys_exclude_every_same_key_candidate():
    # Ten captions, each shared by five images that sit close together: mining
    # by caption key must never offer a same-caption image as a negative.
    centres = unit_rows(10, 8, seed=3)
    keys = np.repeat(np.arange(10), 5)
    images = centres[keys] + 0.1 * unit_rows(50, 8, seed=4)
    mined = mine_hard_negatives(centres, images, anchor_keys=list(range(10)), candidate_keys=keys.tolist(), k=6)
    for anchor, negatives in enumerate(mined):
        assert len(negatives) == 6 and all(keys[j] != anchor for j in negatives)
    matches = [set(np.flatnonzero(keys == a)) for a in range(10)]
    assert mined == brute_force(centres, images, matches, 6, margin=0.05)


def test_recall_of_ivf_against_brute_force(pairs):
    anchors, candidates, positives = pairs
    truth = brute_force(anchors, candidates, positives, 5)
    exhaustive = mine_hard_negatives(
        anchors, candidates, positives, k=5, margin=None, index_factory="IVF4,Flat", nprobe=4
    )
    assert exhaustive == truth
    approximate = mine_hard_negatives(
        anchors, candidates, positives, k=5, margin=None, index_factory="IVF4,Flat", nprobe=2
    )
    recall = np.mean([len(set(m) & set(t)) / len(t) for m, t in zip(approximate, truth, strict=True)])
    assert recall > 0.7


def test_deep_filtering_still_finds_k_and_progress_is_reported():
    # Forty near-copies of the anchor all count as matches: the first search
    # depth is spent on them, so the depth must grow to reach real negatives.
    anchor = unit_rows(1, 8, seed=5)
    copies = anchor + 0.01 * unit_rows(40, 8, seed=6)
    candidates = np.concatenate([copies, unit_rows(30, 8, seed=7)])
    calls = []
    mined = mine_hard_negatives(
        anchor, candidates, {0: set(range(40))}, k=3, margin=None, batch_size=1, progress=lambda *a: calls.append(a)
    )
    assert mined == brute_force(anchor, candidates, [set(range(40))], 3)
    assert len(mined[0]) == 3 and calls == [(1, 1)]


def test_fewer_than_k_when_the_band_is_narrow(pairs):
    anchors, candidates, positives = pairs
    mined = mine_hard_negatives(anchors, candidates, positives, k=50, band=(0.7, 0.8))
    assert mined == brute_force(anchors, candidates, positives, 50, 0.05, (0.7, 0.8))
    assert any(len(m) < 50 for m in mined)


@pytest.mark.parametrize(
    "kwargs", [{"k": 0}, {"band": (0.5, 0.1)}, {"anchor_keys": [0] * 300}, {"candidate_keys": [0] * 400}]
)
def test_bad_arguments_are_rejected(pairs, kwargs):
    anchors, candidates, positives = pairs
    with pytest.raises(ValueError):
        mine_hard_negatives(anchors, candidates, positives, **kwargs)


# ----------------------------------------------------------------- sampler


def planted(n_clusters=16, size=4, seed=8):
    """Clusters of near-identical items, each its own positive: the mined negatives are the cluster mates."""
    centres = unit_rows(n_clusters, 16, seed=seed)
    labels = np.repeat(np.arange(n_clusters), size)
    emb = centres[labels] + 0.05 * unit_rows(len(labels), 16, seed=seed + 1)
    return mine_hard_negatives(emb, emb, {i: {i} for i in range(len(emb))}, k=size - 1, margin=None)


def test_planted_clusters_are_mined():
    mined = planted()
    for i, negatives in enumerate(mined):
        assert sorted(negatives) == sorted(set(range(i // 4 * 4, i // 4 * 4 + 4)) - {i})


@pytest.mark.parametrize(("batch_size", "drop_last"), [(8, False), (10, False), (10, True), (1, False)])
def test_sampler_covers_every_index_once(batch_size, drop_last):
    mined = planted()
    sampler = HardNegativeBatchSampler(mined, batch_size, seed=0, drop_last=drop_last)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert all(len(b) == batch_size for b in batches[:-1])
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))
    if drop_last:
        assert len(batches[-1]) == batch_size and len(flat) == 64 // batch_size * batch_size
    else:
        assert sorted(flat) == list(range(64))


def test_most_anchors_share_a_batch_with_a_mined_negative():
    # Groups of five in batches of eight: groups get cut at batch ends, so this is not trivially 100%.
    mined = planted(n_clusters=20, size=5)
    n = len(mined)
    batches = list(HardNegativeBatchSampler(mined, 8, seed=1))
    batch_of = {i: b for b, batch in enumerate(batches) for i in batch}
    together = np.mean([any(batch_of[j] == batch_of[i] for j in mined[i]) for i in range(n)])
    assert together > 0.8
    # A plain shuffle pairs them far less often (7/99 per mate, about 25% with four mates).
    shuffled = np.random.default_rng(0).permutation(n)
    random_of = {int(i): pos // 8 for pos, i in enumerate(shuffled)}
    assert together > 2 * np.mean([any(random_of[j] == random_of[i] for j in mined[i]) for i in range(n)])


def test_sampler_is_deterministic_per_seed_and_epoch():
    mined = planted()
    sampler = HardNegativeBatchSampler(mined, 8, seed=3, epoch=0)
    first = list(sampler)
    assert first == list(HardNegativeBatchSampler(mined, 8, seed=3, epoch=0))
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert first != list(HardNegativeBatchSampler(mined, 8, seed=4, epoch=0))
    # Resuming mid-epoch gives the rest of the same epoch.
    resumed = HardNegativeBatchSampler(mined, 8, seed=3, epoch=0, start=3)
    assert list(resumed) == first[3:] and len(resumed) == len(first) - 3


def test_per_anchor_limits_the_group():
    mined = planted()
    order = np.random.default_rng([0, 0]).permutation(64).tolist()
    # No negatives per anchor: the batches are the epoch's plain permutation.
    plain = list(HardNegativeBatchSampler(mined, 8, seed=0, per_anchor=0))
    assert plain == [order[i : i + 8] for i in range(0, 64, 8)]
    # One: the first anchor is followed by its hardest mined negative, then the next anchor.
    first = list(HardNegativeBatchSampler(mined, 8, seed=0, per_anchor=1))[0]
    assert first[:2] == [order[0], mined[order[0]][0]]


def test_sampler_rejects_out_of_range_negatives():
    with pytest.raises(ValueError):
        HardNegativeBatchSampler([[1], [5]], 2)
    with pytest.raises(ValueError):
        HardNegativeBatchSampler([[1], [0]], 0)
