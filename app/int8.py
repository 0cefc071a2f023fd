"""``CROSSMODAL_RUNTIME=onnx-int8``: quantised towers, served only where recall survives them, measured.

int8 is a trade, not a free speed-up: dynamic uint8 quantisation has been reported to damage
CLIP embeddings. So before it serves, both the fp32 ONNX encoder (equal to PyTorch) and the int8
one are evaluated on ``CROSSMODAL_INT8_EVAL_SET`` (a manifest, or a synthetic dataset folder);
int8 serves only when neither text->image nor image->text R@1 drops by more than
:data:`MAX_DROP_POINTS`: both towers int8 if they pass, else the text tower alone if it passes.
Otherwise, or without an evaluation set, the service refuses it: it
serves fp32 ONNX and says why in the log and on ``/readyz``. The verdict is cached beside the
int8 graphs, keyed by the evaluation set, so a restart does not measure again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from app.config import Settings
from crossmodal_kernel import atomic
from crossmodal_kernel.images import open_image
from crossmodal_kernel.onnx_encoder import OnnxEncoder, build_encoder, open_sessions
from crossmodal_kernel.onnx_quant import cached_or_quantize

if TYPE_CHECKING:
    from crossmodal_kernel.encoder import Encoder
    from crossmodal_kernel.loading import LoadedModel
    from training.eval_sets import EvalPairs

log = logging.getLogger(__name__)

MAX_DROP_POINTS = 0.5
METRICS = ("t2i_R@1", "i2t_R@1")
CALIBRATION_IMAGES = 64


def int8_encoder(settings: Settings, loaded: LoadedModel) -> Encoder:
    """The int8 encoder when its measured R@1 holds, else the fp32 ONNX one with the reasons as a warning.

    Both towers int8 first; if that loses recall, the text tower alone (queries are mostly texts,
    and a drawing's features may suffer more from int8 activations than a sentence's).
    """
    fp32 = build_encoder(loaded, "onnx", settings.data_dir / "onnx", batch_size=settings.batch_size)
    if not isinstance(fp32, OnnxEncoder) or fp32.graphs is None:
        return _refuse(fp32, "the fp32 ONNX export it starts from is not available")
    if not settings.int8_eval_set:
        return _refuse(fp32, "no evaluation set to measure its recall on: set CROSSMODAL_INT8_EVAL_SET")
    verdicts = []
    try:
        eval_set = Path(settings.int8_eval_set)
        pairs = eval_pairs(eval_set)
        reference = functools.cache(lambda: _recalls(fp32, pairs))
        for image in (True, False):
            int8 = _quantized(fp32, settings, eval_set, image)
            verdict = measured_verdict(reference, int8, pairs, eval_set)
            verdicts.append(verdict)
            if verdict["accepted"]:
                log.info("serving %s on int8 ONNX (%s): %s", loaded.spec, verdict["towers"], verdict["why"])
                return int8
    except Exception as e:
        log.exception("int8 quantisation of %s failed", loaded.spec)
        return _refuse(fp32, f"quantising or measuring it failed: {type(e).__name__}: {e}")
    return _refuse(fp32, "; ".join(f"{v['towers']}: {v['why']}" for v in verdicts))


def _quantized(fp32: OnnxEncoder, settings: Settings, eval_set: Path, image: bool) -> OnnxEncoder:
    assert fp32.graphs is not None
    calibrate = lambda: _pixels(fp32, calibration_pairs(eval_set).images[:CALIBRATION_IMAGES])  # noqa: E731
    graphs = cached_or_quantize(fp32.graphs, calibrate, image=image)
    int8 = OnnxEncoder(
        fp32.loaded,
        open_sessions(graphs, fp32.device),
        batch_size=settings.batch_size,
        runtime="onnx-int8",
        graphs=graphs,
    )
    if not image:
        int8.runtimes["image"] = "onnx"
    return int8


def measured_verdict(reference: Callable[[], dict], int8: OnnxEncoder, pairs: EvalPairs, eval_set: Path) -> dict:
    """fp32's (``reference()``) and int8's R@1 on ``pairs`` and whether int8 may serve; cached beside
    the int8 graphs, keyed by the evaluation set."""
    assert int8.graphs is not None
    key = hashlib.sha256(f"{eval_set.resolve()}|{_stamp(eval_set)}|{len(pairs)}".encode()).hexdigest()[:16]
    cached = int8.graphs.folder.with_name(f"{int8.graphs.folder.name}.verdict-{key}.json")
    if cached.is_file():
        return json.loads(cached.read_text())
    towers = "both towers" if int8.runtimes["image"] == "onnx-int8" else "the text tower"
    verdict = {**judge(reference(), _recalls(int8, pairs), str(eval_set)), "towers": towers}
    atomic.write_text(cached, json.dumps(verdict, indent=2) + "\n")
    return verdict


def judge(fp32: dict[str, float], int8: dict[str, float], where: str) -> dict:
    """Accept when no R@1 drops by more than :data:`MAX_DROP_POINTS` (percentage points)."""
    drops = {m: round(100 * (fp32[m] - int8[m]), 3) for m in METRICS}
    worst = max(drops, key=lambda m: drops[m])
    figures = ", ".join(f"{m} {fp32[m]:.4f} -> {int8[m]:.4f}" for m in METRICS)
    accepted = drops[worst] <= MAX_DROP_POINTS
    why = (
        f"on {where}, {figures}: {worst} drops {drops[worst]:.2f} points, "
        f"{'within' if accepted else 'more than'} the {MAX_DROP_POINTS} allowed"
    )
    return {"accepted": accepted, "fp32": fp32, "int8": int8, "drop_points": drops, "why": why}


def eval_pairs(path: Path) -> EvalPairs:
    """The evaluation pairs of a manifest (its ``test`` split, else ``val``, else all) or a dataset folder."""
    from training.eval_sets import manifest_pairs

    manifest = path / "manifest.csv" if path.is_dir() else path
    if not manifest.is_file():
        raise FileNotFoundError(f"CROSSMODAL_INT8_EVAL_SET: no manifest at {manifest}")
    for split in ("test", "val", None):
        try:
            pairs = manifest_pairs(manifest, split)
        except ValueError:
            continue
        if len(pairs):
            return pairs
    raise ValueError(f"{manifest} has no pairs with an image and a text")


def calibration_pairs(path: Path) -> EvalPairs:
    """Images to calibrate activation ranges on: the manifest's train split where it has one."""
    from training.eval_sets import manifest_pairs

    manifest = path / "manifest.csv" if path.is_dir() else path
    try:
        train = manifest_pairs(manifest, "train")
    except ValueError:
        train = None
    return train if train is not None and len(train) else eval_pairs(path)


def _pixels(encoder: Encoder, paths: list[str]) -> torch.Tensor:
    return torch.stack([encoder.preprocess(open_image(p)) for p in paths])


def _recalls(encoder: Encoder, pairs: EvalPairs) -> dict[str, float]:
    from training.eval_sets import evaluate_pairs

    report = evaluate_pairs(encoder, pairs)
    return {m: float(report[m]) for m in METRICS}


def _stamp(path: Path) -> str:
    manifest = path / "manifest.csv" if path.is_dir() else path
    stat = manifest.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _refuse(fp32: Encoder, why: str) -> Encoder:
    message = f"CROSSMODAL_RUNTIME=onnx-int8 refused for {fp32.spec}: {why}; serving {fp32.runtime} instead"
    log.warning(message)
    fp32.runtime_warnings = (*fp32.runtime_warnings, message)
    return fp32
