"""ONNX Runtime equals PyTorch for every model kind the service serves (real towers: slow).

- ``builtin:lit-mini`` and ``builtin:lit-mini-spp`` (HF text tower with a dynamic token axis,
  timm EfficientNet with TF "same" padding, the spatial-pyramid pool);
- a fine-tuned checkpoint of ours (other head weights, graphs beside the checkpoint);
- an open_clip model folder (ViT-B-32's layout, narrow and shallow) with random weights (open_clip's own towers).
"""

from __future__ import annotations

import json

import pytest
import torch

from crossmodal_kernel.checkpoints import save_checkpoint
from crossmodal_kernel.encoder import Encoder
from crossmodal_kernel.loading import load_model
from crossmodal_kernel.onnx_encoder import OnnxEncoder, build_encoder
from tests.helpers.onnx_equality import assert_equal_embeddings, assert_equal_recalls
from training.synthetic.shapes import generate_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate_dataset(root, n=400, seed=5, image_size=64)
    return root


def _check(spec: str, cache, world) -> OnnxEncoder:
    loaded = load_model(spec, "cpu")
    encoder = build_encoder(loaded, "onnx", cache, batch_size=16)
    assert isinstance(encoder, OnnxEncoder), encoder.runtime_warnings
    reference = Encoder(loaded, batch_size=16)
    assert_equal_embeddings(reference, encoder)
    assert_equal_recalls(reference, encoder, world)
    return encoder


@pytest.mark.parametrize("spec", ["builtin:lit-mini", "builtin:lit-mini-spp"])
def test_builtin(spec, tmp_path, world):
    encoder = _check(spec, tmp_path, world)
    assert encoder.graphs is not None and encoder.graphs.meta["dynamic_text_length"]


def test_fine_tuned_checkpoint(tmp_path, world):
    loaded = load_model("builtin:lit-mini-spp", "cpu")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # stand-in for trained heads: weights no fresh build has
        for head in (loaded.model.visual.head.proj, loaded.model.text.proj):
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.05)
    checkpoint = save_checkpoint(loaded, tmp_path / "models" / "3" / "checkpoint.pt")
    encoder = _check(f"builtin:lit-mini-spp@{checkpoint}", tmp_path / "cache", world)
    assert encoder.graphs is not None and encoder.graphs.folder.parent == checkpoint.parent / "onnx"


def test_open_clip_architecture_with_random_weights(tmp_path, world):
    """open_clip's own towers (VisionTransformer, TextTransformer, its tokenizer), from an open_clip
    model folder: ViT-B-32's layout at a few layers' width, so the export is what ViT-B-32's is."""
    import open_clip

    model_cfg = dict(
        embed_dim=64,
        vision_cfg=dict(image_size=64, patch_size=16, width=128, layers=2, head_width=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=128, heads=4, layers=2),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.model.CLIP(**model_cfg)
    folder = tmp_path / "vit-random"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    encoder = _check(f"local-dir:{folder}", tmp_path / "cache", world)
    assert isinstance(encoder.loaded.model, open_clip.model.CLIP)
