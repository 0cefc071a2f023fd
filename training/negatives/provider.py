"""The hard-negative options that need state or data beyond the batch: the momentum queue, MoCHi mixing,
caption perturbations and ANN-mined batches (the loss itself is ``losses.HardNegativeClipLoss``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from crossmodal_kernel.distributed import DistInfo
from crossmodal_kernel.loading import LoadedModel
from training.config import TrainConfig
from training.distributed import gather_features
from training.pairs import Pair
from training.validation import embed_pairs

if TYPE_CHECKING:
    from training.losses import FeatureQueue
    from training.losses.moco import MomentumEncoder


class HardNegatives:
    """The per-step machinery of the hard-negative options that need state: queue, MoCHi, perturbations."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, embed_dim: int, device: torch.device):
        from training.losses import FeatureQueue
        from training.losses.moco import MomentumEncoder

        self.cfg = cfg.hard_negatives
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        # All three are set together (queue_size > 0) or are all None.
        self.momentum: MomentumEncoder | None = None
        self.image_queue: FeatureQueue | None = None
        self.text_queue: FeatureQueue | None = None
        if self.cfg.queue_size:
            self.momentum = MomentumEncoder(model, momentum=self.cfg.queue_momentum).to(device)
            self.image_queue = FeatureQueue(self.cfg.queue_size, embed_dim).to(device)
            self.text_queue = FeatureQueue(self.cfg.queue_size, embed_dim).to(device)

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "rng": self.rng.bit_generator.state,
            "momentum": self.momentum.state_dict() if self.momentum is not None else None,
            # `is not None`, not truthiness: a FeatureQueue has __len__, so an empty one is falsy.
            "image_queue": self.image_queue.state_dict() if self.image_queue is not None else None,
            "text_queue": self.text_queue.state_dict() if self.text_queue is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = state["rng"]
        if self.momentum:
            image_queue, text_queue = self._queues()
            self.momentum.load_state_dict(state["momentum"])
            image_queue.load_state_dict(state["image_queue"])
            text_queue.load_state_dict(state["text_queue"])

    def _queues(self) -> tuple[FeatureQueue, FeatureQueue]:
        """The image and text queues; only called when ``self.momentum`` is set, and so are they."""
        assert self.image_queue is not None and self.text_queue is not None
        return self.image_queue, self.text_queue

    def perturbed(self, texts: list[str]) -> list[str]:
        from training.negatives.synthesised import perturbation_negatives

        if not self.cfg.perturb_captions:
            return []
        return perturbation_negatives(texts, self.rng, per_caption=self.cfg.perturb_captions)

    def queue_kwargs(self) -> dict:
        if not self.momentum:
            return {}
        image_queue, text_queue = self._queues()
        return {"extra_text_features": text_queue.features(), "extra_image_features": image_queue.features()}

    def mochi(self, img: torch.Tensor, txt: torch.Tensor) -> dict:
        from training.negatives.synthesised import batch_mixed_negatives

        if not self.cfg.mochi:
            return {}
        return batch_mixed_negatives(
            img.detach(),
            txt.detach(),
            generator=self.generator,
            n_hardest=self.cfg.mochi_hardest,
            n_synth=self.cfg.mochi_synthetic,
        )

    @torch.no_grad()
    def after_step(self, model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor, dist_info: DistInfo):
        """Encode the batch with the momentum model, enqueue the (gathered) keys, then follow the model."""
        if not self.momentum:
            return
        image_queue, text_queue = self._queues()
        clip: Any = self.momentum.module  # a copy of the open_clip model, whose encode_* are untyped
        keys_img = clip.encode_image(images, normalize=True)
        keys_txt = clip.encode_text(tokens, normalize=True)
        if dist_info.world_size > 1:
            keys_img, keys_txt = gather_features(
                keys_img, keys_txt, gather_with_grad=False, rank=dist_info.rank, world_size=dist_info.world_size
            )
        image_queue.enqueue(keys_img)
        text_queue.enqueue(keys_txt)
        self.momentum.update(model)


def mined_batches(loaded: LoadedModel, pairs: list[Pair], cfg: TrainConfig, epoch: int, start: int):
    """ANN mining: each image's hardest non-matching captions, composed into shared batches."""
    from training.negatives.mining import HardNegativeBatchSampler, mine_hard_negatives

    img, txt = embed_pairs(loaded, pairs)
    captions = [p.text for p in pairs]
    mined = mine_hard_negatives(
        img, txt, anchor_keys=captions, candidate_keys=captions, k=cfg.hard_negatives.ann_k,
        margin=cfg.hard_negatives.ann_margin,
    )  # fmt: skip
    return HardNegativeBatchSampler(
        mined, cfg.optim.batch_size, seed=cfg.seed, epoch=epoch, drop_last=True, start=start
    )
