import pytest
import torch

from training.losses import FeatureQueue


def numbered(start, stop, dim=2):
    """Rows whose every entry is the row's number, so positions are easy to read."""
    return torch.arange(start, stop, dtype=torch.float32)[:, None].expand(-1, dim).clone()


def ids(queue):
    return queue.features()[:, 0].tolist()


def test_fills_then_wraps_around_oldest_first():
    queue = FeatureQueue(size=5, dim=2)
    assert len(queue) == 0 and queue.features().shape == (0, 2)
    queue.enqueue(numbered(0, 3))
    assert ids(queue) == [0, 1, 2] and len(queue) == 3
    queue.enqueue(numbered(3, 7))  # more rows than the 2 free slots
    assert ids(queue) == [2, 3, 4, 5, 6] and len(queue) == 5
    assert queue.queue[:, 0].tolist() == [5, 6, 2, 3, 4]  # slots: 5 and 6 overwrote 0 and 1
    assert queue.ptr.item() == 2
    queue.enqueue(numbered(7, 8))
    assert ids(queue) == [3, 4, 5, 6, 7]


def test_batch_larger_than_the_queue_keeps_the_newest_rows():
    queue = FeatureQueue(size=4, dim=2)
    queue.enqueue(numbered(0, 1))
    queue.enqueue(numbered(1, 11))
    assert ids(queue) == [7, 8, 9, 10] and len(queue) == 4
    queue.enqueue(numbered(11, 15))  # exactly one queue-full
    assert ids(queue) == [11, 12, 13, 14]


def test_reset_empties_it():
    queue = FeatureQueue(size=3, dim=2)
    queue.enqueue(numbered(0, 5))
    queue.reset()
    assert len(queue) == 0 and queue.features().shape == (0, 2)
    queue.enqueue(numbered(9, 10))
    assert ids(queue) == [9]


def test_rows_are_detached_cast_and_snapshots_are_copies():
    queue = FeatureQueue(size=3, dim=2)
    source = torch.ones(2, 2, dtype=torch.float64, requires_grad=True)
    queue.enqueue(source * 2)
    assert queue.queue.dtype == torch.float32 and not queue.queue.requires_grad
    snapshot = queue.features()
    queue.enqueue(numbered(5, 8))
    assert snapshot.tolist() == [[2.0, 2.0], [2.0, 2.0]]


def test_state_dict_round_trip_and_module_conversion():
    queue = FeatureQueue(size=4, dim=2)
    queue.enqueue(numbered(0, 6))
    state = queue.state_dict()
    assert set(state) == {"queue", "ptr", "filled"}
    restored = FeatureQueue(size=4, dim=2)
    restored.load_state_dict(state)
    assert ids(restored) == ids(queue) == [2, 3, 4, 5]
    restored.double()  # buffers follow .to()/.double() like any module state
    assert restored.queue.dtype == torch.float64 and restored.ptr.dtype == torch.long
    restored.enqueue(numbered(6, 7))
    assert ids(restored) == [3, 4, 5, 6]


@pytest.mark.parametrize("kwargs", [{"size": 0}, {"size": 65_537}, {"size": 2.5}, {"size": True}, {"dim": 0}])
def test_bad_sizes_are_rejected(kwargs):
    with pytest.raises(ValueError):
        FeatureQueue(**{"size": 8, "dim": 2, **kwargs})


def test_largest_size_is_accepted_and_wrong_width_rejected():
    assert FeatureQueue(size=65_536, dim=1).size == 65_536
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        FeatureQueue(size=4, dim=2).enqueue(torch.zeros(3, 5))
