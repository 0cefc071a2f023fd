import numpy as np
import pytest

from index.dedupe import MAX_DEDUPE, near_duplicates


def _naive(vectors, threshold):
    unit = [v / np.linalg.norm(v) for v in vectors]
    kept = []
    for i, v in enumerate(unit):
        if all(float(v @ unit[j]) < threshold for j in kept):
            kept.append(i)
    return [i in kept for i in range(len(vectors))]


def test_near_duplicates_matches_a_naive_greedy_pass():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((40, 16)).astype(np.float32)
    noisy = np.concatenate([base, base[:15] + 0.01 * rng.standard_normal((15, 16)).astype(np.float32)])
    order = rng.permutation(len(noisy))
    vectors = noisy[order] * rng.uniform(0.9, 1.1, (len(noisy), 1)).astype(np.float32)  # not unit length
    for threshold in (0.5, 0.9, 0.999):
        assert near_duplicates(vectors, threshold).tolist() == _naive(vectors, threshold)
    kept = near_duplicates(vectors, 0.99)
    assert kept.sum() == 40 and kept[0]  # each near-copy dropped, the best of each pair kept


def test_near_duplicates_refuses_more_than_it_can_compare():
    with pytest.raises(ValueError, match="at most"):
        near_duplicates(np.ones((MAX_DEDUPE + 1, 2), np.float32), 0.9)
