"""The hard-negative options that need state or data beyond the batch: the momentum queue, MoCHi mixing,
caption perturbations and ANN-mined batches (the loss itself is ``losses.HardNegativeClipLoss``)."""

from __future__ import annotations

import numpy as np
import torch

from crossmodal_kernel.distributed import DistInfo
from crossmodal_kernel.loading import LoadedModel
from training.config import TrainConfig
from training.distributed import gather_features
from training.pairs import Pair
from training.validation import embed_pairs


class HardNegatives:
    """The per-step machinery of the hard-negative options that need state: queue, MoCHi, perturbations."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, embed_dim: int, device: torch.device):
        from training.losses import FeatureQueue
        from training.losses.moco import MomentumEncoder

        self.cfg = cfg.hard_negatives
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.momentum = self.image_queue = self.text_queue = None
        if self.cfg.queue_size:
            self.momentum = MomentumEncoder(model, momentum=self.cfg.queue_momentum).to(device)
            self.image_queue = FeatureQueue(self.cfg.queue_size, embed_dim).to(device)
            self.text_queue = FeatureQueue(self.cfg.queue_size, embed_dim).to(device)

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "rng": self.rng.bit_generator.state,
            "momentum": self.momentum.state_dict() if self.momentum else None,
            "image_queue": self.image_queue.state_dict() if self.image_queue else None,
            "text_queue": self.text_queue.state_dict() if self.text_queue else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = state["rng"]
        if self.momentum:
            self.momentum.load_state_dict(state["momentum"])
            self.image_queue.load_state_dict(state["image_queue"])
            self.text_queue.load_state_dict(state["text_queue"])

    def perturbed(self, texts: list[str]) -> list[str]:
        from training.negatives.synthesised import perturbation_negatives

        if not self.cfg.perturb_captions:
            return []
        return perturbation_negatives(texts, self.rng, per_caption=self.cfg.perturb_captions)

    def queue_kwargs(self) -> dict:
        if not self.momentum:
            return {}
        return {"extra_text_features": self.text_queue.features(), "extra_image_features": self.image_queue.features()}

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
        keys_img = self.momentum.module.encode_image(images, normalize=True)
        keys_txt = self.momentum.module.encode_text(tokens, normalize=True)
        if dist_info.world_size > 1:
            keys_img, keys_txt = gather_features(
                keys_img, keys_txt, gather_with_grad=False, rank=dist_info.rank, world_size=dist_info.world_size
            )
        self.image_queue.enqueue(keys_img)
        self.text_queue.enqueue(keys_txt)
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
