"""The frozen-tower feature cache: a second run encodes nothing; a changed image, view or tower misses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from training import features
from training.bootstrap import BootstrapConfig, bootstrap_heads, tower_features


class _Tower(nn.Module):
    """A two-tower model shaped like lit-mini: pooled features go through ``visual.head`` / ``text.proj``."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.visual = nn.Module()
        self.visual.trunk = nn.Conv2d(3, 6, 3)
        self.visual.head = nn.Linear(6, 4, bias=False)
        self.visual.preprocess_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "size": 16}
        self.text = nn.Module()
        self.text.embed = nn.Embedding(300, 5)
        self.text.proj = nn.Linear(5, 4, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        self.image_calls = self.text_calls = 0

    def encode_image(self, x, normalize=False):
        self.image_calls += len(x)
        return self.visual.head(self.visual.trunk(x).mean((2, 3)))

    def encode_text(self, tokens, normalize=False):
        self.text_calls += len(tokens)
        return self.text.proj(self.text.embed(tokens).mean(1))


@dataclass
class _Loaded:
    model: _Tower
    spec: str = "test:tiny"
    image_size: int = 16
    device: torch.device = torch.device("cpu")

    def preprocess(self, image):
        return T.Compose([T.Resize((16, 16)), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])(image)

    @staticmethod
    def tokenizer(texts):
        return torch.tensor([[ord(c) % 300 for c in (t + " " * 8)[:8]] for t in texts])


def _images(root, n=6):
    paths = []
    for i in range(n):
        path = root / f"{i}.png"
        Image.fromarray(np.full((12, 12, 3), 30 * i, dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _cfg(tmp_path, **kw):
    return BootstrapConfig(num_workers=0, encode_batch_size=4, feature_cache=str(tmp_path / "cache"), **kw)


def test_a_second_run_encodes_nothing_and_gives_the_same_features(tmp_path):
    paths = _images(tmp_path)
    pairs = [(p, f"caption {i}") for i, p in enumerate(paths)]
    loaded = _Loaded(_Tower())
    first = tower_features(loaded, pairs, _cfg(tmp_path, image_views=2))
    assert first.cache["images_encoded"] == 6 + 12 and first.cache["texts_encoded"] == 6
    calls = loaded.model.image_calls, loaded.model.text_calls

    again = _Loaded(_Tower())  # another process: same weights, nothing in memory
    second = tower_features(again, pairs, _cfg(tmp_path, image_views=2))
    assert again.model.image_calls == again.model.text_calls == 0
    assert second.cache == {"images_encoded": 0, "images_cached": 18, "texts_encoded": 0, "texts_cached": 6}
    torch.testing.assert_close(second.img, first.img)
    torch.testing.assert_close(second.txt, first.txt)
    assert calls == (18, 6)


def test_cached_features_are_the_heads_inputs(tmp_path):
    paths = _images(tmp_path, 3)
    loaded = _Loaded(_Tower())
    out = tower_features(loaded, [(p, "x") for p in paths], _cfg(tmp_path))
    x = torch.stack([loaded.preprocess(Image.open(p).convert("RGB")) for p in paths])
    torch.testing.assert_close(out.img, loaded.model.visual.trunk(x).mean((2, 3)).detach())


def test_a_changed_image_misses_and_a_renamed_one_hits(tmp_path):
    paths = _images(tmp_path, 3)
    loaded = _Loaded(_Tower())
    tower_features(loaded, [(p, "x") for p in paths], _cfg(tmp_path))
    Image.fromarray(np.full((12, 12, 3), 200, dtype=np.uint8)).save(paths[0])  # new content
    (tmp_path / "1.png").rename(tmp_path / "moved.png")
    moved = [paths[0], str(tmp_path / "moved.png"), paths[2]]
    out = tower_features(loaded, [(p, "x") for p in moved], _cfg(tmp_path))
    assert out.cache["images_encoded"] == 1 and out.cache["images_cached"] == 2


def test_another_tower_misses_but_other_heads_hit(tmp_path):
    paths = _images(tmp_path, 3)
    pairs = [(p, "x") for p in paths]
    tower_features(_Loaded(_Tower()), pairs, _cfg(tmp_path))

    retrained_heads = _Tower()
    with torch.no_grad():
        retrained_heads.visual.head.weight.add_(1.0)
        retrained_heads.text.proj.weight.add_(1.0)
    assert tower_features(_Loaded(retrained_heads), pairs, _cfg(tmp_path)).cache["images_encoded"] == 0

    unlocked = _Tower()
    with torch.no_grad():
        unlocked.visual.trunk.weight.add_(0.01)
    out = tower_features(_Loaded(unlocked), pairs, _cfg(tmp_path))
    assert out.cache["images_encoded"] == 3 and out.cache["texts_encoded"] == 0  # the text tower is unchanged
    assert features.tower_identity(_Loaded(unlocked)) != features.tower_identity(_Loaded(_Tower()))


def test_another_view_policy_or_seed_misses(tmp_path):
    paths = _images(tmp_path, 2)
    pairs = [(p, "x") for p in paths]
    tower_features(_Loaded(_Tower()), pairs, _cfg(tmp_path, image_views=1))
    assert tower_features(_Loaded(_Tower()), pairs, _cfg(tmp_path, image_views=1, seed=1)).cache["images_encoded"] == 2
    two_views = tower_features(_Loaded(_Tower()), pairs, _cfg(tmp_path, image_views=2))
    assert two_views.cache["images_encoded"] == 2  # view 1 of each image is new


def test_shards_are_written_atomically_and_a_damaged_one_is_a_miss(tmp_path):
    paths = _images(tmp_path, 2)
    pairs = [(p, "x") for p in paths]
    tower_features(_Loaded(_Tower()), pairs, _cfg(tmp_path))
    shards = list((tmp_path / "cache").rglob("shard-*.npz"))
    assert shards and not list((tmp_path / "cache").rglob(".*tmp*"))
    for shard in shards:
        shard.write_bytes(b"not a zip")
    assert tower_features(_Loaded(_Tower()), pairs, _cfg(tmp_path)).cache["images_encoded"] == 2


def test_no_cache_means_every_run_encodes(tmp_path):
    paths = _images(tmp_path, 2)
    pairs = [(p, "x") for p in paths]
    for _ in range(2):
        cfg = BootstrapConfig(num_workers=0, feature_cache="off")
        assert tower_features(_Loaded(_Tower()), pairs, cfg).cache["images_encoded"] == 2
    assert not (tmp_path / "cache").exists()


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(features.CACHE_ENV, str(tmp_path / "here"))
    assert features.default_cache_dir() == tmp_path / "here"
    monkeypatch.setenv(features.CACHE_ENV, "off")
    assert features.default_cache_dir() is None
    monkeypatch.delenv(features.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert features.default_cache_dir() == tmp_path / "xdg" / "crossmodal" / "features"


def test_bootstrap_reports_the_cache_and_masks_siblings(tmp_path):
    paths = _images(tmp_path, 6)
    # Three concepts, each drawn twice (same caption): every batch of all six has siblings.
    pairs = [(p, f"concept {i % 3}") for i, p in enumerate(paths)]
    report = bootstrap_heads(_Loaded(_Tower()), pairs, _cfg(tmp_path, epochs=2, batch_size=6))
    assert report["feature_cache"]["images_encoded"] == 6
    assert report["rows_with_a_sibling_in_batch"] == pytest.approx(1.0)
    again = bootstrap_heads(_Loaded(_Tower()), pairs, _cfg(tmp_path, epochs=2, batch_size=6))
    assert again["feature_cache"]["images_encoded"] == 0
