"""Gradient caching gives the gradients of one full-batch backward while towers see only chunks."""

from __future__ import annotations

import weakref
from functools import partial

import open_clip
import pytest
import torch
import torch.nn.functional as F

from crossmodal_kernel.loading import load_model
from training.gradcache import gradcache_backward
from training.losses import ClipLoss

B = 8


@pytest.fixture(scope="module")
def tiny():
    return load_model("test:tiny", "cpu")


def batch(tokenizer, n=B, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 32, 32, generator=g, dtype=dtype)
    tokens = tokenizer([f"a photo of {k} red squares" for k in range(n)])
    return images, tokens


def fresh(dtype=torch.float64):
    return load_model("test:tiny", "cpu").model.to(dtype).train()


def towers(model):
    return partial(model.encode_image, normalize=True), partial(model.encode_text, normalize=True)


def grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def plain_step(model, images, tokens, chunk_size=None):
    """One ordinary forward/backward; towers run chunk by chunk (with graphs) if asked,
    which draws random numbers in the order gradient caching's first pass does."""
    model.zero_grad(set_to_none=True)
    encode_image, encode_text = towers(model)
    size = chunk_size or len(images)
    img = torch.cat([encode_image(c) for c in images.split(size)])
    txt = torch.cat([encode_text(c) for c in tokens.split(size)])
    loss = ClipLoss(learnable=False)(img, txt, logit_scale=model.logit_scale.exp())["contrastive_loss"]
    loss.backward()
    return loss.detach(), grads(model)


def cached_step(model, images, tokens, chunk_size, encode_text=None, **kwargs):
    model.zero_grad(set_to_none=True)
    encode_image, plain_text = towers(model)
    terms = gradcache_backward(
        encode_image,
        encode_text or plain_text,
        images,
        tokens,
        ClipLoss(learnable=False),
        chunk_size=chunk_size,
        loss_kwargs={"logit_scale": model.logit_scale.exp()},
        **kwargs,
    )
    return terms["contrastive_loss"], grads(model)


def assert_same_grads(got, want, **tol):
    assert got.keys() == want.keys()
    assert "logit_scale" in got
    for name in want:
        torch.testing.assert_close(got[name], want[name], **tol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("chunk_size", [1, 3])
def test_chunks_give_the_full_batch_loss_and_gradients(tiny, chunk_size):
    model = fresh()
    images, tokens = batch(tiny.tokenizer)
    want_loss, want = plain_step(model, images, tokens)
    got_loss, got = cached_step(model, images, tokens, chunk_size)
    torch.testing.assert_close(got_loss, want_loss)
    assert_same_grads(got, want)
    assert got["logit_scale"].abs() > 0


@pytest.mark.parametrize("chunk_size", [B, 100])
def test_chunk_of_the_whole_batch_is_one_plain_pass(tiny, chunk_size):
    model = fresh()
    images, tokens = batch(tiny.tokenizer)
    calls = []
    encode_image, encode_text = towers(model)

    def counted(encode):
        return lambda x: calls.append(len(x)) or encode(x)

    want_loss, want = plain_step(model, images, tokens)
    model.zero_grad(set_to_none=True)
    terms = gradcache_backward(
        counted(encode_image),
        counted(encode_text),
        images,
        tokens,
        ClipLoss(learnable=False),
        chunk_size=chunk_size,
        loss_kwargs={"logit_scale": model.logit_scale.exp()},
    )
    assert calls == [B, B]
    torch.testing.assert_close(terms["contrastive_loss"], want_loss)
    assert_same_grads(grads(model), want)


def test_random_layers_draw_the_same_numbers_in_both_passes(tiny):
    """Patch dropout in the image tower, dropout on the text features: the replayed pass must
    reproduce the first pass's masks, or the cached gradients belong to other features."""
    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32, patch_dropout=0.5),
        text_cfg=dict(context_length=32, vocab_size=49408, width=64, heads=2, layers=2),
    )
    model = model.double().train()
    text_tower = model.encode_text
    model.encode_text = lambda tokens, normalize: F.normalize(
        F.dropout(text_tower(tokens), p=0.3, training=True), dim=-1
    )
    images, tokens = batch(tiny.tokenizer)

    torch.manual_seed(1)
    want_loss, want = plain_step(model, images, tokens, chunk_size=3)
    want_rng = torch.get_rng_state()
    torch.manual_seed(1)
    got_loss, got = cached_step(model, images, tokens, 3)
    torch.testing.assert_close(got_loss, want_loss)
    assert_same_grads(got, want)
    assert torch.equal(torch.get_rng_state(), want_rng), "the RNG stream must advance as in one forward pass"

    torch.manual_seed(2)
    other_loss, _ = plain_step(model, images, tokens, chunk_size=3)
    assert not torch.isclose(other_loss, want_loss), "dropout is live: other masks, another loss"


def test_grad_scaler_scales_the_loss_once(tiny):
    model = fresh()
    images, tokens = batch(tiny.tokenizer)
    _, want = plain_step(model, images, tokens)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    _, got = cached_step(model, images, tokens, 3, scaler=scaler)
    assert_same_grads(got, {k: v * 2.0**10 for k, v in want.items()})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler.unscale_(optimizer)
    assert_same_grads(grads(model), want)


def test_autocast_runs_the_forward_passes_in_low_precision(tiny):
    model = fresh(torch.float32)
    images, tokens = batch(tiny.tokenizer, dtype=torch.float32)
    autocast = partial(torch.autocast, "cpu", dtype=torch.bfloat16)
    with autocast():
        assert model.encode_image(images[:2]).dtype == torch.bfloat16
        want_loss, want = plain_step(model, images, tokens)
    got_loss, got = cached_step(model, images, tokens, 3, autocast=autocast)
    # bf16 keeps ~3 significant digits; chunks may round differently from the full batch.
    torch.testing.assert_close(got_loss, want_loss, rtol=2e-2, atol=2e-2)
    for name in want:
        scale = want[name].abs().max().clamp(min=1e-3)
        assert (got[name] - want[name]).abs().max() / scale < 0.1, name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_autocast_with_grad_scaler(tiny):
    model = load_model("test:tiny", "cuda").model.train()
    images, tokens = (t.cuda() for t in batch(tiny.tokenizer, dtype=torch.float32))
    autocast = partial(torch.autocast, "cuda", dtype=torch.float16)
    with autocast():
        want_loss, want = plain_step(model, images, tokens)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**12)
    got_loss, got = cached_step(model, images, tokens, 3, autocast=autocast, scaler=scaler)
    scaler.unscale_(torch.optim.SGD(model.parameters(), lr=0.0))
    got = grads(model)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-2, atol=1e-2)
    for name in want:
        scale = want[name].abs().max().clamp(min=1e-3)
        assert (got[name] - want[name]).abs().max() / scale < 0.05, name


def test_a_locked_tower_is_encoded_once(tiny):
    model = fresh()
    for name, p in model.named_parameters():
        if not name.startswith("visual.") and name != "logit_scale":
            p.requires_grad_(False)
    images, tokens = batch(tiny.tokenizer)
    _, want = plain_step(model, images, tokens)
    calls = []
    encode_text = partial(model.encode_text, normalize=True)
    _, got = cached_step(model, images, tokens, 3, encode_text=lambda t: calls.append(len(t)) or encode_text(t))
    assert calls == [3, 3, 2, 3], "three chunks once, then the first replay finds nothing to train"
    assert_same_grads(got, want)


class SavedActivations:
    """Bytes of tensors autograd keeps for backward, live and at peak (parameters excluded)."""

    def __init__(self, model):
        self.params = {p.data_ptr() for p in model.parameters()}
        self.live = self.peak = 0

    def pack(self, t):
        if t.data_ptr() in self.params:
            return t
        holder, size = _Holder(t), t.numel() * t.element_size()
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(holder, self._free, size)  # runs when autograd frees the graph
        return holder

    def _free(self, size):
        self.live -= size

    @staticmethod
    def unpack(h):
        return h if isinstance(h, torch.Tensor) else h.value

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


class _Holder:
    def __init__(self, value):
        self.value = value


def test_activation_memory_is_bounded_by_the_chunk(tiny):
    """A deterministic stand-in for peak memory: bytes autograd saves for backward at once.
    The real allocator peak is for a benchmark. A chunk of 2 out of 8 keeps under a quarter
    (0.16 for test:tiny): the plain step holds both towers' graphs at once, the replay one chunk."""
    model = fresh()
    images, tokens = batch(tiny.tokenizer)
    with SavedActivations(model) as full:
        plain_step(model, images, tokens)
    with SavedActivations(model) as chunked:
        cached_step(model, images, tokens, 2)
    assert full.live == chunked.live == 0
    ratio = chunked.peak / full.peak
    assert ratio < 2 / B, f"chunk 2 of {B} kept {ratio:.2f} of the full batch's saved activations"


@pytest.mark.parametrize("chunk_size", [0, -1, 2.0, True])
def test_chunk_size_must_be_a_positive_int(tiny, chunk_size):
    model = fresh()
    images, tokens = batch(tiny.tokenizer, n=2)
    with pytest.raises(ValueError, match="chunk_size"):
        cached_step(model, images, tokens, chunk_size)
