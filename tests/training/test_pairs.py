import pytest
import torch
from PIL import Image

from training.config import AugmentConfig
from training.pairs import train_transform

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)


def _square(size: int = 48) -> Image.Image:
    img = Image.new("RGB", (size, size), (255, 255, 255))
    img.paste((200, 20, 20), (12, 12, 36, 36))
    return img


def test_the_default_policy_only_crops_and_normalises():
    torch.manual_seed(0)
    out = train_transform(AugmentConfig(crop_scale=(1.0, 1.0)), 48, MEAN, STD)(_square())
    # With a full-image crop nothing but resizing and normalisation happens: the corner stays white.
    assert out.shape == (3, 48, 48)
    torch.testing.assert_close(out[:, 0, 0], (1 - torch.tensor(MEAN)) / torch.tensor(STD), atol=0.02, rtol=0)


def test_rotation_fills_uncovered_corners_with_the_mean_which_normalises_to_zero():
    torch.manual_seed(0)
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), rotation=45.0)
    outs = [train_transform(cfg, 48, MEAN, STD)(_square()) for _ in range(8)]
    rotated = [o for o in outs if o[:, 0, 0].abs().max() < 0.05]  # a corner went off the image
    assert rotated, "no draw rotated far enough to uncover a corner"
    # Rotation about the centre keeps the centred square's middle red.
    for o in outs:
        assert o[0, 24, 24] > o[1, 24, 24]


def test_rotation_is_bounded():
    with pytest.raises(ValueError):
        AugmentConfig(rotation=90.0)
    assert AugmentConfig().rotation == 0.0
