"""Training and evaluation decode see-through PNGs by the kernel's one rule (onto white).

The kernel's own paths (files, uploads, ImageFiles, Encoder) are checked in
tests/crossmodal_kernel/test_images_transparency.py; these are the paths in training/.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from crossmodal_kernel.images import open_image
from tests.crossmodal_kernel.test_images_transparency import _recording_loaded, transparent_pngs
from training import eval_sets, evaluate, validation
from training.pairs import Pair, PairDataset


class RecordingEncoder:
    """Records the pixels of the images it is asked to encode; embeddings are arbitrary."""

    embed_dim = 4

    def __init__(self):
        self.seen: list[np.ndarray] = []

    def encode_images(self, images):
        for image in images:
            assert isinstance(image, Image.Image) and image.mode == "RGB"
            self.seen.append(np.asarray(image))
        return np.eye(len(images), self.embed_dim, dtype=np.float32)

    def encode_texts(self, texts):
        return np.eye(len(texts), self.embed_dim, dtype=np.float32)


@pytest.mark.parametrize("kind", sorted(transparent_pngs()))
def test_training_and_evaluation_see_the_same_pixels(kind, tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(transparent_pngs()[kind])
    reference = np.asarray(open_image(str(path)))

    seen_by_training: list[np.ndarray] = []
    PairDataset([Pair(str(path), "a")], lambda image: seen_by_training.append(np.asarray(image)), seed=0)[0]

    encoder = RecordingEncoder()
    evaluate._encode_image_files(encoder, [str(path)], chunk_size=8, progress=None)  # the synthetic world's
    eval_sets.evaluate_pairs(encoder, eval_sets.EvalPairs([str(path)], ["a"]))  # manifests and the DB

    seen_by_validation: list[np.ndarray] = []
    loaded = _recording_loaded(seen_by_validation)
    loaded.tokenizer = lambda texts: torch.zeros(len(texts), 3, dtype=torch.long)
    loaded.model = SimpleNamespace(
        encode_image=loaded.model.encode_image, encode_text=lambda t, normalize=False: torch.ones(len(t), 4)
    )
    validation.embed_pairs(loaded, [Pair(str(path), "a")])  # fine-tuning's validation

    for pixels in (*seen_by_training, *encoder.seen, *seen_by_validation):
        assert np.array_equal(pixels, reference)
    assert len(seen_by_training) == 1 and len(encoder.seen) == 2 and len(seen_by_validation) == 1
