"""int8 towers from the fp32 ONNX graphs, cached beside them.

- text tower: dynamic quantisation of the matrix products' weights (int8, per output channel);
  activations are quantised per batch at run time, so no calibration data is needed;
- image tower: static quantisation (QDQ, int8 weights per channel, activations' ranges
  calibrated on images the caller gives); without calibration images it stays fp32.

Whether the result may serve is not decided here: dynamic int8 has been reported to damage CLIP
embeddings, so the service measures recall before using it (``app.int8``).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossmodal_kernel import atomic
from crossmodal_kernel.onnx_export import META, TOWERS, Graphs, read_graphs

log = logging.getLogger(__name__)

SUFFIX = "-int8"


def int8_folder(graphs: Graphs, image: bool = True) -> Path:
    """Beside the fp32 folder: ``<name>-int8`` (both towers) or ``<name>-int8-text`` (the text tower only)."""
    return graphs.folder.with_name(graphs.folder.name + SUFFIX + ("" if image else "-text"))


def cached_or_quantize(graphs: Graphs, calibration: Callable[[], torch.Tensor | None], image: bool = True) -> Graphs:
    """The int8 graphs of ``graphs``, quantised on first use: the text tower, and the image tower too when
    ``image`` and ``calibration`` (called only when quantising) gives preprocessed images (n, 3, H, W)."""
    folder = int8_folder(graphs, image)
    found = read_graphs(folder)
    if found is not None:
        return found
    try:
        with atomic.atomic_dir(folder) as tmp:
            quantize(graphs, tmp, calibration() if image else None)
    except FileExistsError:
        pass
    found = read_graphs(folder)
    if found is None:
        raise RuntimeError(f"{folder} holds no complete int8 export")
    return found


def quantize(graphs: Graphs, out: Path, calibration: torch.Tensor | None) -> dict:
    """int8 text tower, and int8 image tower where ``calibration`` images are given (else a copy of fp32)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(graphs.path("text")),
        str(out / "text.onnx"),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gemm"],
    )
    image = "fp32"
    if calibration is not None and len(calibration):
        _quantize_image_static(graphs.path("image"), out / "image.onnx", calibration)
        image = f"int8 static, calibrated on {len(calibration)} images"
    else:
        shutil.copyfile(graphs.path("image"), out / "image.onnx")
    meta = {
        **graphs.meta,
        "files": {t: f"{t}.onnx" for t in TOWERS},
        "quantized": {"text": "int8 dynamic (MatMul/Gemm weights per channel)", "image": image},
        "from": graphs.folder.name,
    }
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _quantize_image_static(source: Path, target: Path, calibration: torch.Tensor) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, name: str, batches: list[np.ndarray]):
            self.name, self.batches = name, iter(batches)

        def get_next(self) -> dict[str, Any] | None:
            batch = next(self.batches, None)
            return None if batch is None else {self.name: batch}

    import onnxruntime as ort

    name = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    arrays = [np.ascontiguousarray(calibration[i : i + 8].numpy()) for i in range(0, len(calibration), 8)]
    quantize_static(
        str(source),
        str(target),
        Reader(name, arrays),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
