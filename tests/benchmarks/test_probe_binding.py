"""probe_binding.py's feature extraction on a random EfficientNet-Lite0 trunk (no packaged weights)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import probe_binding


@pytest.fixture(scope="module")
def fake_loaded():
    import timm
    from torchvision import transforms

    torch.manual_seed(0)
    trunk = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    preprocess = transforms.Compose([transforms.Resize((64, 64)), transforms.ToTensor()])
    return SimpleNamespace(model=SimpleNamespace(visual=SimpleNamespace(trunk=trunk)), preprocess=preprocess)


def test_extract_gives_every_stage_and_pool_with_the_right_width(fake_loaded, tmp_path):
    paths = []
    for i, colour in enumerate(["red", "blue", "green"]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (40, 30), colour).save(paths[-1])
    feats = probe_binding.extract(fake_loaded, paths, batch_size=2)
    stages = list(probe_binding.stage_modules(fake_loaded.model.visual.trunk))
    assert list(feats) == stages and len(stages) == 5
    for by_pool in feats.values():
        assert list(by_pool) == list(probe_binding.POOLS)
        channels = by_pool["avg"].shape[1]
        assert {p: a.shape for p, a in by_pool.items()} == {
            "avg": (3, channels), "grid": (3, 4 * channels), "spp": (3, 5 * channels)
        }  # fmt: skip
        np.testing.assert_allclose(by_pool["spp"][:, :channels], by_pool["avg"], rtol=1e-5, atol=1e-6)
    assert feats[stages[-1]]["avg"].shape[1] == fake_loaded.model.visual.trunk.num_features


def test_standardise_uses_train_statistics_only():
    train = np.array([[0.0, 10.0], [2.0, 10.0]])
    test = np.array([[4.0, 10.0]])
    tr, te = probe_binding.standardise(train, test)
    np.testing.assert_allclose(tr.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(te, [[3.0, 0.0]], atol=1e-5)
