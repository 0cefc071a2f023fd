"""Training objectives, one module per paper; each ``forward`` returns a dict of ``*_loss`` terms."""

from training.losses.barlow_twins import BarlowTwinsLoss
from training.losses.byol import BYOLLoss, BYOLPredictionHead
from training.losses.clip import ClipLoss
from training.losses.hard_negative import HardNegativeClipLoss
from training.losses.memory_bank import FeatureQueue
from training.losses.moco import (
    CrossModalMoCoLoss,
    MoCoLoss,
    MomentumEncoder,
    cosine_momentum,
    update_momentum,
)
from training.losses.siglip import SigLipLoss
from training.losses.simclr import NTXentLoss

__all__ = [
    "BYOLLoss",
    "BYOLPredictionHead",
    "BarlowTwinsLoss",
    "ClipLoss",
    "CrossModalMoCoLoss",
    "FeatureQueue",
    "HardNegativeClipLoss",
    "MoCoLoss",
    "MomentumEncoder",
    "NTXentLoss",
    "SigLipLoss",
    "cosine_momentum",
    "update_momentum",
]
