import pytest
import torch
from PIL import Image
from torchvision import transforms as T

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


def test_random_illumination_is_a_bounded_seeded_linear_gradient():
    from training.pairs import RandomIllumination

    img = torch.full((3, 16, 20), 0.5)
    torch.manual_seed(7)
    out = RandomIllumination(0.3)(img)
    torch.manual_seed(7)
    assert torch.equal(out, RandomIllumination(0.3)(img))  # torch's RNG draws everything
    gain = out / img
    # |a| <= 0.3 over |t| <= 1/sqrt(2) at the corners, |b| <= 0.075
    assert float((gain - 1).abs().max()) <= 0.3 / 2**0.5 + 0.075 + 1e-6
    for c in range(3):  # linear in position: second differences vanish along both axes
        g = gain[c].double()
        assert torch.allclose(g[:, 2:] - 2 * g[:, 1:-1] + g[:, :-2], torch.zeros(1, dtype=torch.double), atol=1e-5)
        assert torch.allclose(g[2:] - 2 * g[1:-1] + g[:-2], torch.zeros(1, dtype=torch.double), atol=1e-5)
    assert float(RandomIllumination(0.9)(torch.ones(3, 4, 4)).max()) <= 1.0
    with pytest.raises(ValueError):
        RandomIllumination(0.0)


def test_illumination_is_off_by_default_and_not_recorded_in_old_style_checkpoints():
    from training import resume
    from training.config import TrainConfig
    from training.pairs import RandomIllumination

    def has_illumination(cfg):
        steps = train_transform(cfg, 32, (0.5,) * 3, (0.5,) * 3).transforms
        return any(isinstance(t, T.RandomApply) and isinstance(t.transforms[0], RandomIllumination) for t in steps)

    assert not has_illumination(AugmentConfig()) and has_illumination(AugmentConfig(illumination=0.5))
    cfg = TrainConfig.model_validate({"data": {"manifest": "m.csv"}})
    assert "illumination" not in resume._config_json(cfg)["augment"]
    lit = TrainConfig.model_validate({"data": {"manifest": "m.csv"}, "augment": {"illumination": 0.5}})
    assert resume._config_json(lit)["augment"]["illumination"] == 0.5
