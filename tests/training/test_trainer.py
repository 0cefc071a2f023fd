"""The fine-tuning loop on the tiny model: it learns, resumes exactly, stops, locks and interpolates."""

from __future__ import annotations

import math

import pytest
import torch

from crossmodal_kernel.loading import load_model
from tests.helpers.training_runs import checkpoint_weights, train_config
from training.config import TrainConfig
from training.optim import warmup_cosine
from training.synthetic.shapes import generate_dataset
from training.trainer import finetune


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("ds"), n=48, seed=0, image_size=32).manifest


def test_warmup_then_cosine():
    f = warmup_cosine(2, 10)
    assert [round(f(s), 3) for s in (0, 1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0) and f(6) == pytest.approx(0.5) and f(10) == pytest.approx(0.0)


def test_training_reports_progress_and_writes_a_loadable_checkpoint(manifest, tmp_path):
    seen = []
    result = finetune(train_config(manifest, tmp_path), progress=seen.append)
    assert result.steps == 6 and [e["step"] for e in seen] == list(range(1, 7))
    assert all(math.isfinite(e["loss"]) and e["samples_per_s"] > 0 for e in seen)
    assert seen[-1]["eta_s"] == 0 and seen[0]["lr"] < seen[1]["lr"]  # warmup
    assert [e["step"] for e in result.evals] == [3, 6] and "t2i_R@1" in result.evals[0]
    assert [e["val"] for e in seen if "val" in e] == result.evals  # a step's report carries its validation
    loaded = load_model(f"test:tiny@{result.checkpoint}", "cpu")
    assert not torch.equal(
        loaded.model.state_dict()["text_projection"],
        load_model("test:tiny", "cpu").model.state_dict()["text_projection"],
    )


def test_resume_after_a_kill_continues_exactly(manifest, tmp_path):
    straight = finetune(train_config(manifest, tmp_path / "a"))
    calls = {"n": 0}

    def cancel_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] == 3

    cfg = train_config(manifest, tmp_path / "b")
    first = finetune(cfg, cancel=cancel_after_three)
    assert first.cancelled and first.steps == 3 and first.checkpoint is None
    resumed = finetune(cfg)
    assert resumed.steps == 6 and [h["step"] for h in resumed.history] == list(range(1, 7))
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history], abs=1e-6)
    a, b = checkpoint_weights(straight.checkpoint), checkpoint_weights(resumed.checkpoint)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)


def test_resume_refuses_another_configuration(manifest, tmp_path):
    finetune(train_config(manifest, tmp_path, checkpoint_every=3), cancel=lambda: False)
    with pytest.raises(ValueError, match="another configuration"):
        finetune(train_config(manifest, tmp_path, checkpoint_every=3, optim={"lr": 5e-4}))


def test_early_stopping(manifest, tmp_path):
    result = finetune(
        train_config(manifest, tmp_path, optim={"steps": 60, "lr": 1e-9}, eval_every=2, early_stopping_patience=2)
    )
    assert result.stopped_early and result.steps < 60


def test_a_locked_image_tower_stays_put_while_the_text_tower_trains(manifest, tmp_path):
    # open_clip's lock semantics: a native ViT tower locks with its projection (LiT).
    cfg = train_config(manifest, tmp_path, lock={"image_unlocked_groups": 0, "text_unlocked_layers": None})
    result = finetune(cfg)
    base = load_model("test:tiny", "cpu").model.state_dict()
    tuned = checkpoint_weights(result.checkpoint)
    for name in ("visual.conv1.weight", "visual.proj"):
        assert torch.equal(base[name], tuned[name]), name
    assert not torch.equal(base["text_projection"], tuned["text_projection"])


def test_wise_ft_zero_returns_the_base_model(manifest, tmp_path):
    result = finetune(train_config(manifest, tmp_path, wise_ft_alpha=0.0))
    base = load_model("test:tiny", "cpu").model.state_dict()
    for name, value in checkpoint_weights(result.checkpoint).items():
        if value.is_floating_point():
            torch.testing.assert_close(value, base[name])


def test_siglip_loss_trains(manifest, tmp_path):
    result = finetune(train_config(manifest, tmp_path, loss={"kind": "siglip"}))
    assert result.steps == 6 and all(math.isfinite(h["loss"]) for h in result.history)


def test_config_rejects_typos_and_bad_values(manifest, tmp_path):
    with pytest.raises(ValueError):
        train_config(manifest, tmp_path, optim={"batch_sise": 8})
    with pytest.raises(ValueError):
        train_config(manifest, tmp_path, augment={"crop_scale": (0.9, 0.2)})


@pytest.mark.parametrize(
    "kind, key", [("simclr", "ntxent_loss"), ("byol", "byol_loss"), ("barlow_twins", "barlow_twins_loss")]
)
def test_self_supervised_auxiliaries_train_beside_the_contrastive_loss(manifest, tmp_path, kind, key):
    cfg = train_config(
        manifest,
        tmp_path,
        ssl={"kind": kind, "weight": 0.5, "projector_hidden": 32, "projector_dim": 16},
        augment={"crop_scale": (0.5, 1.0), "flip": True},
    )
    result = finetune(cfg)
    last = result.history[-1]
    assert {"contrastive_loss", key} <= set(last)
    assert last["loss"] == pytest.approx(last["contrastive_loss"] + last[key], rel=1e-5)


def test_byol_resume_restores_the_momentum_target(manifest, tmp_path):
    over = {"ssl": {"kind": "byol", "projector_hidden": 32, "projector_dim": 16}}
    straight = finetune(train_config(manifest, tmp_path / "a", **over))
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] == 2

    cfg = train_config(manifest, tmp_path / "b", **over)
    finetune(cfg, cancel=cancel)
    resumed = finetune(cfg)
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history], abs=1e-6)


def test_image_only_adaptation_needs_no_captions(tmp_path):
    ds = generate_dataset(tmp_path / "ds", n=24, seed=1, image_size=32)
    images_only = tmp_path / "images.csv"
    images_only.write_text("image\n" + "\n".join(str(ds.root / r["image"]) for r in ds.rows()) + "\n")
    cfg = train_config(
        images_only,
        tmp_path / "run",
        ssl={"kind": "simclr", "image_only": True, "projector_hidden": 32, "projector_dim": 16},
    )
    result = finetune(cfg)
    assert result.steps == 6 and "contrastive_loss" not in result.history[-1]
    base = load_model("test:tiny", "cpu").model.state_dict()
    tuned = checkpoint_weights(result.checkpoint)
    assert not torch.equal(base["visual.conv1.weight"], tuned["visual.conv1.weight"])
    assert torch.equal(base["text_projection"], tuned["text_projection"])


def test_image_only_needs_an_ssl_kind(manifest, tmp_path):
    with pytest.raises(ValueError, match="needs an ssl.kind"):
        train_config(manifest, tmp_path, ssl={"image_only": True})


@pytest.mark.slow
def test_unlocking_the_last_minilm_layer_of_lit_mini():
    from training.locking import apply_locks

    loaded = load_model("builtin:lit-mini", "cpu")
    cfg = TrainConfig.model_validate(
        {"data": {"manifest": "x.csv"}, "lock": {"image_unlocked_groups": 1, "text_unlocked_layers": 1}}
    )
    apply_locks(loaded.model, cfg)
    trainable = {n for n, p in loaded.model.named_parameters() if p.requires_grad}
    assert any(n.startswith("text.transformer.encoder.layer.5.") for n in trainable)
    assert not any(n.startswith("text.transformer.encoder.layer.4.") for n in trainable)
    assert not any(n.startswith("text.transformer.embeddings") for n in trainable)
    assert "text.proj.weight" in trainable and any(n.startswith("visual.head") for n in trainable)
    assert not any(n.startswith("visual.trunk.conv_stem") for n in trainable)
    with pytest.raises(ValueError, match="has 6 layers"):
        too_many = cfg.lock.model_copy(update={"text_unlocked_layers": 9})
        apply_locks(loaded.model, cfg.model_copy(update={"lock": too_many}))


def test_no_dropout_means_no_attention_dropout_in_an_unlocked_minilm_layer():
    """``optim.dropout: false`` must reach the attention dropout Hugging Face layers apply themselves
    (they read their own training flag): with it on, the unlocked layer drew from the RNG every step."""
    from crossmodal_kernel.encoder import trim_padding
    from training.locking import apply_locks, set_train_mode

    loaded = load_model("builtin:lit-mini", "cpu")
    raw = {"data": {"manifest": "x.csv"}, "lock": {"image_unlocked_groups": 0, "text_unlocked_layers": 1}}
    tokens = trim_padding(loaded.model, loaded.tokenizer(["a red circle", "a large blue square on the left"]))

    def twice(dropout: bool) -> tuple[torch.Tensor, torch.Tensor, bool]:
        cfg = TrainConfig.model_validate({**raw, "optim": {"dropout": dropout}})
        apply_locks(loaded.model, cfg)
        set_train_mode(loaded.model, cfg)
        with torch.no_grad():
            state = torch.random.get_rng_state()
            first = loaded.model.encode_text(tokens)
            drew = not torch.equal(state, torch.random.get_rng_state())
            return first, loaded.model.encode_text(tokens), drew

    off_a, off_b, drew = twice(dropout=False)
    assert torch.equal(off_a, off_b) and not drew
    on_a, on_b, drew = twice(dropout=True)
    assert not torch.equal(on_a, on_b) and drew


@pytest.mark.slow
def test_locking_and_train_mode_leave_lit_mini_features_as_at_inference():
    """Regression: open_clip's freeze_bn_stats dropped EfficientNet's activations, and train-mode
    dropout / batch statistics moved features far enough to undo trained heads."""
    from training.locking import apply_locks, set_train_mode

    loaded = load_model("builtin:lit-mini", "cpu")
    model = loaded.model
    images = torch.rand(4, 3, 224, 224) * 2 - 1
    tokens = loaded.tokenizer(["a red circle", "a blue square", "a green star", "a black cross"])
    with torch.no_grad():
        want_img, want_txt = model.encode_image(images), model.encode_text(tokens)
    cfg = TrainConfig.model_validate({"data": {"manifest": "x.csv"}, "lock": {"image_unlocked_groups": 1}})
    apply_locks(model, cfg)
    set_train_mode(model, cfg)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), want_img, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model.encode_text(tokens), want_txt, atol=1e-5, rtol=1e-4)
    assert model.visual.head.training  # the trainable head itself is in train mode


def test_resume_from_a_periodic_checkpoint_keeps_the_global_rng_stream(manifest, tmp_path, monkeypatch):
    """Regression: the DataLoader drew its workers' base seed from the global torch RNG when its
    iterator was made, so a run resumed mid-epoch from a periodic checkpoint (after a kill) drew
    once more than an uninterrupted one, right after the restored RNG state, and every random draw
    of the later steps (lit-mini's attention dropout) moved. The tiny model draws nothing, so a
    step here does."""
    import training.step

    set_train_mode = training.step.set_train_mode

    def set_train_mode_and_draw(model, cfg):
        set_train_mode(model, cfg)
        with torch.no_grad():
            model.logit_scale.add_(1e-3 * torch.rand(()))

    monkeypatch.setattr(training.step, "set_train_mode", set_train_mode_and_draw)
    over = {"checkpoint_every": 3, "optim": {"steps": 8}}  # 4 batches an epoch: resumes mid-epoch 0
    straight = finetune(train_config(manifest, tmp_path / "a", **over))

    def killed_at_step_5(entry: dict) -> None:
        if entry["step"] == 5:
            raise KeyboardInterrupt  # as a kill: nothing is saved after the step-3 checkpoint

    cfg = train_config(manifest, tmp_path / "b", **over)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, progress=killed_at_step_5)
    resumed = finetune(cfg)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    a, b = checkpoint_weights(straight.checkpoint), checkpoint_weights(resumed.checkpoint)
    assert all(torch.equal(a[name], b[name]) for name in a)
