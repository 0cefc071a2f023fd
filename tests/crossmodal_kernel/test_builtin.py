import pytest
import torch
import torch.nn.functional as F

from crossmodal_kernel.builtin import grid_mean


@pytest.mark.parametrize("size", [(7, 7), (5, 9), (1, 1), (8, 6)])
@pytest.mark.parametrize("level", [1, 2, 3])
def test_grid_mean_is_adaptive_average_pooling(size, level):
    """The spelling the ONNX export traces computes what PyTorch's adaptive pooling does, overlaps included."""
    fmap = torch.randn(2, 4, *size, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(grid_mean(fmap, level), F.adaptive_avg_pool2d(fmap, level))
