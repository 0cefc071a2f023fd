"""The bootstrap's recipe options: siblings, the name-plus-keywords loss, feature dropout, image alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.training.test_bootstrap import _Fake
from training.bootstrap import BootstrapConfig, fit_heads, multi_positive_loss, sibling_keys, text_identity
from training.evaluate import retrieval_metrics


def _data(n_concepts=16, houses=3, seed=0):
    """Concepts drawn by several houses (a shared latent plus house noise), named once each."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_concepts, 4))
    to_img, to_txt = rng.standard_normal((4, 6)), rng.standard_normal((4, 5))
    img = np.concatenate([latent @ to_img + 0.1 * rng.standard_normal((n_concepts, 6)) for _ in range(houses)])
    txt = np.concatenate([latent @ to_txt for _ in range(houses)])
    groups = torch.arange(n_concepts).repeat(houses)
    return torch.tensor(img, dtype=torch.float32), torch.tensor(txt, dtype=torch.float32), groups


@pytest.mark.parametrize("siblings", ["mask", "positive", "negative"])
def test_every_sibling_rule_learns_the_alignment(siblings):
    img, txt, groups = _data()
    # At lr 1e-2, one start of the heads in ten ended below the bar; at 3e-2 each of 20 reached R@1 >= 0.94.
    fake = _Fake()
    cfg = BootstrapConfig(epochs=120, batch_size=48, lr=3e-2, siblings=siblings, feature_dropout=0.0)
    report, _ = fit_heads(fake.model.visual.head, fake.model.text.proj, img, txt, cfg, groups=groups)
    with torch.no_grad():
        a = F.normalize(fake.model.visual.head(img[:16]), dim=-1).numpy()
        b = F.normalize(fake.model.text.proj(txt[:16]), dim=-1).numpy()
    assert retrieval_metrics(a, b, np.arange(16))["t2i_R@1"] > 0.8
    # Every row has two siblings among 48: all of them share the one batch.
    assert report["rows_with_a_sibling_in_batch"] == pytest.approx(1.0)


def test_the_name_trains_every_step_with_keywords_as_a_second_loss():
    img, txt, groups = _data(n_concepts=8, houses=1)
    keyword = torch.zeros(8, 5)  # every concept's second caption is the same useless keyword
    both = torch.stack([txt, keyword], 1).reshape(16, 5)
    texts = [t for i in range(8) for t in (f"name {i}", "keyword")]
    fake = _Fake()
    cfg = BootstrapConfig(epochs=150, batch_size=8, lr=1e-2, caption_weight=0.2, feature_dropout=0.0)
    fit_heads(fake.model.visual.head, fake.model.text.proj, img, both, cfg, counts=[2] * 8, groups=groups,
              text_ids=text_identity(texts))  # fmt: skip
    with torch.no_grad():
        a = F.normalize(fake.model.visual.head(img), dim=-1).numpy()
        b = F.normalize(fake.model.text.proj(txt), dim=-1).numpy()
    assert retrieval_metrics(a, b, np.arange(8))["t2i_R@1"] > 0.7


def test_feature_dropout_and_image_alignment_run_and_alignment_needs_groups():
    img, txt, groups = _data(n_concepts=8)
    fake = _Fake()
    cfg = BootstrapConfig(epochs=3, batch_size=12, feature_dropout=0.5, image_align=0.5)
    report, _ = fit_heads(fake.model.visual.head, fake.model.text.proj, img, txt, cfg, groups=groups)
    assert np.isfinite(report["final_loss"])
    with pytest.raises(ValueError, match="groups"):
        fit_heads(_Fake().model.visual.head, _Fake().model.text.proj, img, txt, cfg)


def test_multi_positive_loss_with_duplicate_texts_is_clip():
    """Two rows with identical texts: CLIP's two cross entropies already spread each text over both images."""
    torch.manual_seed(0)
    img, txt = torch.randn(4, 3), torch.randn(4, 3)
    txt[1] = txt[0]
    positives = torch.zeros(4, 4, dtype=torch.bool)
    positives[0, 1] = positives[1, 0] = True
    scale = torch.tensor(2.0)
    from training.bootstrap import clip_loss

    got = multi_positive_loss(img, txt, scale, positives, torch.zeros(4, 4, dtype=torch.bool))
    torch.testing.assert_close(got, clip_loss(img, txt, scale), rtol=1e-5, atol=1e-6)


def test_sibling_keys_group_by_column_and_by_caption():
    pairs = [("a", "cat"), ("b", "cat"), ("c", "dog"), ("d", "pup")]
    keys = sibling_keys(pairs, [0, 1, 2, 3], ["x", "y", "z", "z"])
    assert keys[0, 1] == keys[1, 1] and keys[0, 0] != keys[1, 0]  # same caption, different groups
    assert keys[2, 0] == keys[3, 0] and keys[2, 1] != keys[3, 1]  # same group, different captions
    assert (sibling_keys(pairs, [0, 2])[:, 0] == -1).all()


@pytest.mark.parametrize("bad", [{"siblings": "both"}, {"image_align": -1.0}, {"caption_weight": -0.1},
                                 {"feature_dropout": 1.0}, {"loss": "siglip", "hard_beta": 0.1},
                                 {"temperature": 0.0}, {"name_share": 2.0}])  # fmt: skip
def test_bad_recipe_settings_are_refused(bad):
    with pytest.raises(ValueError):
        BootstrapConfig(**bad)
