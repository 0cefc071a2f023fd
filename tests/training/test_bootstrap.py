import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.bootstrap import BootstrapConfig, clip_loss, train_heads
from training.evaluate import retrieval_metrics


def test_clip_loss_matches_a_naive_transcription():
    torch.manual_seed(0)
    img, txt = torch.randn(5, 8), torch.randn(5, 8)
    scale = torch.tensor(math.log(10.0))
    a, b = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    naive = 0.0
    for i in range(5):
        row = [10.0 * float(a[i] @ b[j]) for j in range(5)]
        col = [10.0 * float(a[j] @ b[i]) for j in range(5)]
        naive += -row[i] + math.log(sum(math.exp(v) for v in row))
        naive += -col[i] + math.log(sum(math.exp(v) for v in col))
    assert float(clip_loss(img, txt, scale)) == pytest.approx(naive / 10, rel=1e-5)


def test_clip_loss_of_perfectly_aligned_orthogonal_pairs_is_small():
    e = torch.eye(4)
    assert float(clip_loss(e, e, torch.tensor(math.log(100.0)))) < 1e-3


class _Fake:
    """Just enough of a LoadedModel for train_heads: heads at model.visual.head / model.text.proj."""

    def __init__(self, seed: int = 0):
        self.model = torch.nn.Module()
        self.model.visual = torch.nn.Module()
        self.model.text = torch.nn.Module()
        # Seeded heads: drawn from the global RNG, a test's start depended on the tests run before it.
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.model.visual.head = torch.nn.Linear(6, 4, bias=False)
            self.model.text.proj = torch.nn.Linear(5, 4, bias=False)
        self.model.logit_scale = torch.nn.Parameter(torch.tensor(0.0))


def test_train_heads_learns_an_alignment_and_installs_the_heads():
    rng = np.random.default_rng(0)
    latent = torch.tensor(rng.standard_normal((64, 4)), dtype=torch.float32)
    img = latent @ torch.tensor(rng.standard_normal((4, 6)), dtype=torch.float32)
    txt = latent @ torch.tensor(rng.standard_normal((4, 5)), dtype=torch.float32)
    fake = _Fake()
    before = fake.model.visual.head.weight.clone()
    report = train_heads(fake, img, txt, BootstrapConfig(epochs=150, batch_size=32, lr=1e-2))
    assert not torch.equal(before, fake.model.visual.head.weight)
    with torch.no_grad():
        a = F.normalize(fake.model.visual.head(img), dim=-1).numpy()
        b = F.normalize(fake.model.text.proj(txt), dim=-1).numpy()
    assert retrieval_metrics(a, b, np.arange(64))["t2i_R@1"] > 0.9
    assert report["steps"] == 150 * 2 and report["final_loss"] < 1.0


def test_train_heads_rejects_models_without_module_heads():
    class NoHeads:
        model = torch.nn.Module()

    NoHeads.model.visual = torch.nn.Module()
    with pytest.raises(TypeError, match="projection heads"):
        train_heads(NoHeads(), torch.zeros(2, 3), torch.zeros(2, 3), BootstrapConfig(epochs=1))


def test_train_heads_draws_one_of_each_images_captions_per_epoch():
    """Image i owns counts[i] consecutive text rows; each epoch trains on one of them per image, and
    over the epochs every row comes up. A row's first feature is its index, so a hook on the text
    head sees which rows each step trained on."""
    counts = [1 + i % 3 for i in range(12)]
    owner = [i for i, c in enumerate(counts) for _ in range(c)]
    img, txt = torch.randn(12, 6), torch.randn(len(owner), 5)
    txt[:, 0] = torch.arange(len(owner), dtype=torch.float32)
    fake, seen = _Fake(), []
    # The hook's function survives the copy train_heads makes of the head.
    fake.model.text.proj.register_forward_pre_hook(lambda _m, args: seen.append(args[0][:, 0].long().tolist()))
    # caption_weight 0: the drawn caption is the only text each step (the name is not added beside it)
    report = train_heads(fake, img, txt, BootstrapConfig(epochs=40, batch_size=12, caption_weight=0.0), counts=counts)
    assert report["steps"] == 40 and len(seen) == 40
    for batch in seen:  # one batch per epoch here: every image once, with a caption of its own
        assert sorted(owner[r] for r in batch) == list(range(12))
    assert {r for batch in seen for r in batch} == set(range(len(owner)))
    with pytest.raises(ValueError, match="do not match"):
        train_heads(_Fake(), img, txt[:-1], BootstrapConfig(epochs=1), counts=counts)


def test_wordings_keep_the_text_first_and_drop_blanks_and_repeats():
    from training.bootstrap import wordings

    assert wordings("a red circle", ["a red circle", " ", "a crimson disc"]) == ["a red circle", "a crimson disc"]
    assert wordings("a red circle", ()) == ["a red circle"]


def test_train_heads_draws_one_view_block_per_image_and_epoch():
    """``views`` blocks of one row per image (row v * n + i): every step trains each image on one of
    its own rows, and over the epochs every block comes up."""
    n, views = 12, 3
    img, txt = torch.randn(views * n, 6), torch.randn(n, 5)
    img[:, 0] = torch.arange(views * n, dtype=torch.float32)
    fake, seen = _Fake(), []
    fake.model.visual.head.register_forward_pre_hook(lambda _m, args: seen.append(args[0][:, 0].long().tolist()))
    train_heads(fake, img, txt, BootstrapConfig(epochs=30, batch_size=n), views=views)
    assert len(seen) == 30
    for batch in seen:
        assert sorted(r % n for r in batch) == list(range(n))
    assert {r for batch in seen for r in batch} == set(range(views * n))
    with pytest.raises(ValueError, match="blocks"):
        train_heads(_Fake(), img[:-1], txt, BootstrapConfig(epochs=1), views=views)


def test_train_heads_without_views_trains_as_before():
    """One block: the same generator draws, so the same heads as a run that never heard of views."""
    img, txt = torch.randn(20, 6), torch.randn(20, 5)
    a, b = _Fake(), _Fake()
    b.model.load_state_dict(a.model.state_dict())
    train_heads(a, img, txt, BootstrapConfig(epochs=5, batch_size=8))
    train_heads(b, img, txt, BootstrapConfig(epochs=5, batch_size=8), views=1)
    assert torch.equal(a.model.visual.head.weight, b.model.visual.head.weight)


def test_bootstrap_config_rejects_negative_views_and_reports_plain_values():
    with pytest.raises(ValueError, match="image_views"):
        BootstrapConfig(image_views=-1)
    report = BootstrapConfig(image_views=2).report()
    assert report["image_views"] == 2 and report["view_augment"]["crop_scale"] == [0.7, 1.0]


@pytest.mark.slow
def test_cache_features_encodes_seeded_augmented_views_after_the_clean_one(tmp_path):
    from crossmodal_kernel.loading import load_model
    from training.bootstrap import cache_features
    from training.synthetic.shapes import generate_dataset

    ds = generate_dataset(tmp_path / "ds", n=10, seed=0, image_size=64)
    pairs = [(str(ds.root / r["image"]), r["text"]) for r in ds.rows()]
    loaded = load_model("builtin:lit-mini", "cpu")
    plain, _, keys = cache_features(loaded, pairs, BootstrapConfig(num_workers=0, encode_batch_size=4))
    cfg = BootstrapConfig(num_workers=0, encode_batch_size=4, image_views=2)
    img, txt, keys2 = cache_features(loaded, pairs, cfg)
    again, _, _ = cache_features(loaded, pairs, cfg)
    n = len(keys)
    assert keys2 == keys and img.shape == (3 * n, plain.shape[1]) and len(txt) == n
    torch.testing.assert_close(img[:n], plain)
    blocks = img.reshape(3, n, -1)
    assert not torch.allclose(blocks[1], blocks[0]) and not torch.allclose(blocks[2], blocks[1])
    torch.testing.assert_close(again, img)  # seeded per image and view


def test_synonym_captions_add_seeded_rewordings(tmp_path):
    from tests.training.test_thesaurus import write_wordnet
    from training.bootstrap import synonym_captions

    root = str(write_wordnet(tmp_path / "wn"))
    pairs = [("a.png", "a small blue square"), ("b.png", "a square"), ("c.png", "small square")]
    cfg = BootstrapConfig(synonym_wordings=6, synonyms=1.0, wordnet_dir=root, seed=1)
    out = synonym_captions(pairs, [["tiny blue square"], [], []], cfg)
    assert out == synonym_captions(pairs, [["tiny blue square"], [], []], cfg)  # a function of the seed
    assert out[0][0] == "tiny blue square"  # the pair's own extra captions come first
    assert 1 < len(out[0]) <= 7 and all(t.endswith("square") for t in out[0])
    assert out[1] == []  # nothing to substitute: no rewording kept
    assert {t.split()[0] for t in out[2]} <= {"little", "minuscule", "miniscule"}
    other = synonym_captions(pairs, None, BootstrapConfig(synonym_wordings=6, synonyms=1.0, wordnet_dir=root, seed=2))
    assert other != out


@pytest.mark.parametrize("bad", [{"synonym_wordings": -1}, {"synonyms": 0.0}, {"synonyms": 1.5}])
def test_bootstrap_config_rejects_bad_synonym_settings(bad):
    with pytest.raises(ValueError):
        BootstrapConfig(**bad)
