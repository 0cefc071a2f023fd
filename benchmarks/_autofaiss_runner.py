"""Build one autofaiss index and write what autofaiss chose; runs inside the autofaiss venv, not the project's.

autofaiss pins numpy<2 and needs faiss-cpu<1.10, so this script may import only
autofaiss, numpy, faiss and the stdlib. `benchmarks/_autofaiss.py` starts it in
a subprocess with a wall-clock limit and reads `--infos-path` afterwards.

The infos file is written twice, each time atomically: once before the build
starts (``finished: false``, with the index key autofaiss is about to build, so
a build killed by the time limit still says what it was trying), and once after
the index is on disk (``finished: true``, with autofaiss's own metrics).

Exit status: 0 built and verified, 2 bad input, 3 autofaiss built nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import autofaiss
import faiss
import numpy as np
from autofaiss.external.build import get_estimated_construction_time_infos
from autofaiss.external.metadata import IndexMetadata
from autofaiss.external.optimize import get_optimal_index_keys_v2
from autofaiss.utils.cast import cast_memory_to_bytes


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--embeddings", type=Path, required=True, help="folder of 2-D float32 .npy files")
    p.add_argument("--index-path", type=Path, required=True)
    p.add_argument("--infos-path", type=Path, required=True)
    p.add_argument("--max-index-memory-usage", required=True, help='autofaiss memory string, e.g. "4G" or "123B"')
    p.add_argument("--current-memory-available", required=True, help="autofaiss memory string")
    p.add_argument("--metric", choices=["ip", "l2"], default="ip")
    p.add_argument("--nb-cores", type=int, required=True)
    p.add_argument("--max-index-query-time-ms", type=float, default=None, help="autofaiss default (10 ms) if unset")
    return p.parse_args(argv)


def _scan(folder: Path) -> tuple[int, int]:
    """Count rows and dimension the way autofaiss's numpy reader will, and refuse files it would misread.

    embedding_reader globs ``**/*.npy`` recursively, sorts the paths, parses only
    the shape and dtype out of each header and ignores ``fortran_order``, so a
    Fortran-ordered or non-2-D file would be read as garbage rather than fail.
    """
    files = sorted(folder.glob("**/*.npy"))
    if not files:
        raise ValueError(f"no .npy files under {folder}")
    n, dim = 0, None
    for f in files:
        a = np.load(f, mmap_mode="r")
        if a.ndim != 2 or a.dtype != np.float32 or (a.shape[0] > 1 and not a.flags.c_contiguous):
            raise ValueError(f"{f}: need a C-ordered 2-D float32 array, got {a.dtype} {a.shape}")
        if dim is not None and a.shape[1] != dim:
            raise ValueError(f"{f}: dimension {a.shape[1]} != {dim}")
        dim = a.shape[1]
        n += a.shape[0]
    if n == 0:
        raise ValueError(f"no rows in the .npy files under {folder}")
    assert dim is not None  # `files` is not empty, so the loop set it
    return n, int(dim)


def _vm_hwm() -> int | None:
    """This process's peak RSS since exec; unlike ru_maxrss it excludes the parent's memory at fork."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def _json_default(o: Any) -> Any:
    """autofaiss's metrics hold numpy scalars."""
    return o.item() if hasattr(o, "item") else str(o)


def _write_json(path: Path, payload: dict) -> None:
    """Atomic, so a run killed mid-write never leaves a half file for the parent to parse."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        n, dim = _scan(args.embeddings)
        max_bytes = cast_memory_to_bytes(args.max_index_memory_usage)
        cast_memory_to_bytes(args.current_memory_available)
    except ValueError as e:
        print(f"autofaiss runner: {e}", file=sys.stderr)
        return 2

    # build_index picks candidates[0] with these same arguments (make_direct_map, should_be_memory_mappable and
    # use_gpu all False). Asking first turns "no index fits the budget" into a clear error: inside build_index it is
    # an IndexError from estimate_memory_required_for_index_creation.
    candidates = get_optimal_index_keys_v2(n, dim, args.max_index_memory_usage)
    infos: dict[str, Any] = {
        "finished": False,
        "index_key": candidates[0] if candidates else None,
        "index_param": None,
        "candidate_index_keys": candidates,
        "estimated_index_size_bytes": (
            IndexMetadata(candidates[0], n, dim).estimated_index_size_in_bytes() if candidates else None
        ),
        "estimated_construction_time": " | ".join(
            s.strip() for s in get_estimated_construction_time_infos(n, dim).splitlines()
        ),
        "nb_vectors": n,
        "dim": dim,
        "metric": args.metric,
        "max_index_memory_usage": args.max_index_memory_usage,
        "max_index_memory_usage_bytes": int(max_bytes),
        "current_memory_available": args.current_memory_available,
        "nb_cores": args.nb_cores,
        "versions": {"autofaiss": autofaiss.__version__, "faiss": faiss.__version__, "numpy": np.__version__},
        "autofaiss_infos": None,
    }
    _write_json(args.infos_path, infos)
    if not candidates:
        print(f"autofaiss runner: no index for {n}x{dim} fits in {args.max_index_memory_usage}", file=sys.stderr)
        return 3

    kwargs: dict[str, Any] = {}
    if args.max_index_query_time_ms is not None:
        kwargs["max_index_query_time_ms"] = args.max_index_query_time_ms
    args.index_path.parent.mkdir(parents=True, exist_ok=True)
    args.index_path.unlink(missing_ok=True)
    # autofaiss writes its own infos JSON (the same dict it returns); keep it apart from ours.
    own_infos = args.infos_path.with_name(args.infos_path.stem + ".autofaiss_own.json")
    t0 = time.perf_counter()
    # No normalisation happens here: autofaiss 2.18's build_index has no normalise option, the numpy reader only
    # copies rows into float32 batches, and "ip" makes IndexHNSWFlat / IVF*,Flat / OPQ+IVF-PQ with METRIC_INNER_PRODUCT.
    index, metric_infos = autofaiss.build_index(
        embeddings=str(args.embeddings),
        index_path=str(args.index_path),
        index_infos_path=str(own_infos),
        save_on_disk=True,
        file_format="npy",
        max_index_memory_usage=args.max_index_memory_usage,
        current_memory_available=args.current_memory_available,
        metric_type=args.metric,
        nb_cores=args.nb_cores,
        make_direct_map=False,
        should_be_memory_mappable=False,
        verbose=logging.INFO,
        **kwargs,
    )
    build_s = time.perf_counter() - t0
    vm_hwm = _vm_hwm()
    # build_index logs an error and returns (None, None) instead of raising when its own memory checks fail.
    if index is None or not metric_infos:
        print("autofaiss runner: build_index returned nothing (see its log above)", file=sys.stderr)
        return 3
    if not args.index_path.is_file():
        print(f"autofaiss runner: build_index did not write {args.index_path}", file=sys.stderr)
        return 3
    if index.ntotal != n:
        print(f"autofaiss runner: index holds {index.ntotal} vectors, input has {n}", file=sys.stderr)
        return 3

    infos.update(
        finished=True,
        index_key=metric_infos["index_key"],
        index_param=metric_infos["index_param"],
        build_index_s=build_s,
        index_file_bytes=args.index_path.stat().st_size,
        autofaiss_infos=metric_infos,
        runner_vm_hwm_bytes=vm_hwm,
    )
    _write_json(args.infos_path, infos)
    return 0


if __name__ == "__main__":
    sys.exit(main())
