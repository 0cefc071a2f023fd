"""The ONNX Runtime encoder: the same :class:`~crossmodal_kernel.encoder.Encoder`, its towers run by ONNX Runtime.

:func:`build_encoder` turns a loaded model and a runtime name into an encoder:

- ``torch``: PyTorch eager, as before;
- ``onnx``: both towers exported (or found in the cache, :mod:`crossmodal_kernel.onnx_export`)
  and run by ONNX Runtime; any failure (no onnxruntime, an export that fails or does not
  reproduce PyTorch, no CUDA provider on a GPU) falls back to PyTorch, with the reason in the
  log and in ``encoder.runtime_warnings`` (the service shows it on ``/readyz``);
- ``auto``: ``onnx`` where it is measured faster (CPU, and CUDA when onnxruntime-gpu provides
  the CUDA provider), PyTorch otherwise, silently.

Preprocessing and tokenising are the model's own (shared with PyTorch), so only the forward
pass differs, and :mod:`~crossmodal_kernel.onnx_export` has checked that it agrees.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossmodal_kernel.encoder import Encoder
from crossmodal_kernel.loading import LoadedModel
from crossmodal_kernel.onnx_export import TOWERS, Graphs, cache_dir, cached_or_export

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx", "auto")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class RuntimeUnavailable(RuntimeError):
    """ONNX Runtime cannot run this model here (not installed, no provider for the device)."""


class OnnxEncoder(Encoder):
    """An :class:`Encoder` whose towers run in ONNX Runtime sessions; a tower without one runs on PyTorch.

    Sessions are thread-safe, but runs are serialised like PyTorch's (one model, one set of cores:
    two concurrent runs only split the intra-op threads between them).
    """

    def __init__(
        self,
        loaded: LoadedModel,
        sessions: dict[str, Any],
        batch_size: int = 64,
        runtime: str = "onnx",
        graphs: Graphs | None = None,
        runtime_warnings: Sequence[str] = (),
    ):
        super().__init__(loaded, batch_size=batch_size)
        unknown = set(sessions) - set(TOWERS)
        if unknown:
            raise ValueError(f"unknown towers {sorted(unknown)}; expected some of {TOWERS}")
        self.sessions = dict(sessions)
        self.graphs = graphs
        self.runtime = runtime
        self.runtimes = {t: runtime if t in self.sessions else "torch" for t in TOWERS}
        self.runtime_warnings = tuple(runtime_warnings)
        self._inputs = {t: s.get_inputs()[0].name for t, s in self.sessions.items()}

    def _tower(self, tower: str, batch: torch.Tensor) -> np.ndarray:
        session = self.sessions.get(tower)
        if session is None:
            return super()._tower(tower, batch)
        feed = {self._inputs[tower]: np.ascontiguousarray(batch.detach().cpu().numpy())}
        with self._forward_lock:
            out = session.run(None, feed)[0]
        return np.asarray(out, dtype=np.float32)


def providers(device: torch.device, available: Sequence[str]) -> list:
    """ONNX Runtime execution providers for ``device``: CUDA (then CPU for what it lacks) on a GPU."""
    if device.type != "cuda":
        return [CPU]
    if CUDA not in available:
        raise RuntimeUnavailable(
            f"onnxruntime has no CUDA provider here (it has {', '.join(available) or 'none'}): "
            "install onnxruntime-gpu instead of onnxruntime"
        )
    return [(CUDA, {"device_id": device.index or 0}), CPU]


def session_options(threads: int | None = None, spinning: bool = False) -> Any:
    """Options for the API process, where one batching thread runs the encoder beside request threads.

    - intra-op threads: as many as torch uses (the cores, or ``OMP_NUM_THREADS``), so both
      runtimes get the same cores; inter-op 1 and sequential execution, since these graphs are
      a chain of operators with nothing to overlap;
    - no spinning: ONNX Runtime's workers otherwise spin after each operator, stealing the cores
      that the request threads (uvicorn, FastAPI, FAISS, JSON) need between encodes, for the
      reason ``OMP_WAIT_POLICY=PASSIVE`` is set for torch (app/runtime.py);
    - every graph optimisation (constant folding, layer norm / GELU / attention fusions).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return options


def open_sessions(graphs: Graphs, device: torch.device, threads: int | None = None) -> dict[str, Any]:
    import onnxruntime as ort

    chosen = providers(device, ort.get_available_providers())
    return {
        tower: ort.InferenceSession(str(graphs.path(tower)), session_options(threads), providers=chosen)
        for tower in TOWERS
    }


def build_encoder(
    loaded: LoadedModel,
    runtime: str,
    cache_root: str | Path,
    batch_size: int = 64,
    threads: int | None = None,
) -> Encoder:
    """An encoder for ``loaded`` running on ``runtime`` (see the module docstring); never raises for ONNX reasons."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {RUNTIMES}")
    if runtime == "torch":
        return Encoder(loaded, batch_size=batch_size)
    try:
        available = _available()  # before the export: without onnxruntime or a GPU provider, no export
        providers(loaded.device, available)
        graphs = cached_or_export(loaded, cache_dir(loaded.spec, Path(cache_root)))
        sessions = open_sessions(graphs, loaded.device, threads)
    except Exception as e:
        if runtime == "auto" and isinstance(e, RuntimeUnavailable):
            log.info("serving %s on PyTorch: %s", loaded.spec, e)
            return Encoder(loaded, batch_size=batch_size)
        why = f"ONNX Runtime is not used for {loaded.spec}, PyTorch serves it instead: {type(e).__name__}: {e}"
        log.warning(why, exc_info=not isinstance(e, RuntimeUnavailable))
        fallback = Encoder(loaded, batch_size=batch_size)
        fallback.runtime_warnings = (why,)
        return fallback
    log.info("serving %s on ONNX Runtime (%s)", loaded.spec, graphs.folder)
    return OnnxEncoder(loaded, sessions, batch_size=batch_size, runtime="onnx", graphs=graphs)


def _available() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise RuntimeUnavailable(f"onnxruntime is not installed ({e})") from e
    return list(ort.get_available_providers())
