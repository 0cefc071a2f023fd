"""Encoder: images and texts in, L2-normalised float32 embeddings out.

This is the one place the service turns data into vectors, for indexing and
for queries alike, so both paths get the same preprocessing, batching and
normalisation. The vectors are unit length, so inner product = cosine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.hf_model import HFTextEncoder
from PIL import Image

from crossmodal_kernel.images import to_rgb
from crossmodal_kernel.loading import LoadedModel, load_model


class Encoder:
    """Batched, thread-safe inference over a loaded model.

    Callers may share one Encoder between threads (an API worker pool): the
    forward passes are serialised by a lock (one model, one device: running
    them concurrently gains little and risks memory spikes), and so is the
    tokenizer, since HF fast tokenizers fail ("Already borrowed") when used
    from two threads at once. Image decoding and preprocessing run unlocked.
    """

    def __init__(self, loaded: LoadedModel, batch_size: int = 64, amp: bool | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.loaded = loaded
        self.model: Any = loaded.model
        self.tokenizer = loaded.tokenizer
        self.preprocess = loaded.preprocess
        self.spec = loaded.spec
        self.embed_dim = loaded.embed_dim
        self.device = loaded.device
        self.batch_size = batch_size
        # Mixed precision only pays (and is only well supported) on CUDA.
        self.amp = (self.device.type == "cuda") if amp is None else (bool(amp) and self.device.type == "cuda")
        self._forward_lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()
        # What runs each tower, and why not the runtime asked for (crossmodal_kernel.onnx_encoder).
        self.runtime = "torch"
        self.runtimes = {"text": "torch", "image": "torch"}
        self.runtime_warnings: tuple[str, ...] = ()

    @classmethod
    def from_spec(cls, spec: str, device="auto", **kw) -> Encoder:
        return cls(load_model(spec, device), **kw)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, embed_dim) float32 unit rows; any PIL mode (alpha is flattened onto white)."""
        images = list(images)
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(to_rgb(im)) for im in images[start : start + self.batch_size]])
            chunks.append(self._tower("image", batch))
        return self._concat(chunks)

    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Same contract, for tensors already made by ``self.preprocess`` in DataLoader workers."""
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a (n, 3, H, W) batch, got shape {tuple(batch.shape)}")
        chunks = [
            self._tower("image", batch[start : start + self.batch_size])
            for start in range(0, len(batch), self.batch_size)
        ]
        return self._concat(chunks)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, embed_dim) float32 unit rows; texts longer than the context are truncated."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of strings, not a single string")
        texts = list(texts)
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            with self._tokenizer_lock:
                tokens = self.tokenizer(texts[start : start + self.batch_size])
            tokens = trim_padding(self.model, tokens)
            chunks.append(self._tower("text", tokens))
        return self._concat(chunks)

    def _tower(self, tower: str, batch: torch.Tensor) -> np.ndarray:
        """One batch through the ``"image"`` or ``"text"`` tower (the ONNX Runtime encoder overrides this)."""
        return self._forward(self.model.encode_image if tower == "image" else self.model.encode_text, batch)

    def _forward(self, encode: Callable[..., torch.Tensor], batch: torch.Tensor) -> np.ndarray:
        batch = batch.to(self.device, non_blocking=True)
        with self._forward_lock, torch.inference_mode():
            with torch.autocast(device_type=self.device.type, enabled=self.amp):
                features = encode(batch, normalize=False)
            # Normalise in float32: under AMP the model's own normalize would run in half precision.
            features = F.normalize(features.float(), dim=-1)
        return features.cpu().numpy()

    def _concat(self, chunks: list[np.ndarray]) -> np.ndarray:
        if not chunks:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


def trim_padding(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Drop the all-padding tail columns for HF text towers, which mask padding anyway.

    Tokenizers pad every batch to the full context length; a short query then pays for
    64 positions instead of ~12. Only HF towers are trimmed: their attention mask comes
    from the pad id, so the output is unchanged. CLIP's own towers are left alone.
    """
    text = getattr(model, "text", None)
    if not isinstance(text, HFTextEncoder):
        return tokens
    used = (tokens != text.config.pad_token_id).any(dim=0).nonzero()
    return tokens[:, : int(used.max()) + 1] if len(used) else tokens
