"""Run autofaiss as a baseline index builder, from the project venv, in a venv of its own.

autofaiss 2.18 pins numpy<2, and its OPQ code fails on faiss-cpu>=1.10, so it
cannot share the project venv (numpy 2, faiss 1.15). `ensure_venv` builds a
separate venv once; `build` runs `_autofaiss_runner.py` there in its own
process group under a wall-clock limit, because on a few cores autofaiss can
train far longer than its own estimate and an unfinished build is a result.
The index it writes is read back here with the project's faiss and tuned with
`apply_params`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)

# autofaiss pinned because the runner relies on its build_index signature and return value.
# faiss-cpu<1.10: autofaiss's OPQ+IVF-PQ path breaks on 1.10+. numpy<2: autofaiss's own requirement, stated so
# pip never has to backtrack. pyarrow<16: from the original recipe; only autofaiss's parquet input uses it.
PINS: tuple[str, ...] = ("autofaiss==2.18.0", "faiss-cpu>=1.9,<1.10", "numpy>=1.26,<2", "pyarrow>=15,<16")
RUNNER = Path(__file__).resolve().with_name("_autofaiss_runner.py")
_MARKER = ".autofaiss-venv-ready"
_TAIL = 2000
_ENV_DROP = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONNOUSERSITE")


def _clean_env(**extra: str) -> dict[str, str]:
    """The project venv's environment must not leak numpy 2 into the autofaiss interpreter."""
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    env.update(extra)
    return env


def _tail(text: str | bytes, n: int = _TAIL) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return text[-n:]


def ensure_venv(path: Path) -> Path:
    """Create the autofaiss venv at `path` unless it is already complete; return its python.

    Completion is a marker file holding the pins, written only after the install
    and an import check succeed, so an interrupted install is redone and a change
    to PINS reinstalls.
    """
    path = Path(path).absolute()
    python = path / "bin" / "python"
    marker = path / _MARKER
    want = "\n".join(PINS) + "\n"
    if python.exists() and marker.is_file() and marker.read_text() == want:
        return python

    if path.exists() and any(path.iterdir()) and not (path / "pyvenv.cfg").exists():
        raise RuntimeError(f"{path} exists and is not a venv; refusing to clear it")
    marker.unlink(missing_ok=True)
    steps = [
        ("create venv", [sys.executable, "-m", "venv", "--clear", str(path)]),
        ("pip install", [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PINS]),
        ("import check", [str(python), "-I", "-c", "import autofaiss, faiss, numpy"]),
    ]
    for what, cmd in steps:
        r = subprocess.run(cmd, capture_output=True, env=_clean_env(), stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"autofaiss venv {what} failed (exit {r.returncode}): {_tail(r.stderr)}")
    marker.write_text(want)
    return python


def memory_string(n_bytes: int) -> str:
    """autofaiss's cast_memory_to_bytes takes "<number><unit>" in powers of 1024 ("4G" == "4GB" == 4 GiB) and
    rejects a bare number; "<n>B" is exact."""
    if n_bytes <= 0:
        raise ValueError(f"memory must be positive, got {n_bytes}")
    return f"{int(n_bytes)}B"


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def _current_memory(budget: int) -> int:
    """What to tell autofaiss the machine has: generous, so only max_index_memory_usage binds.

    build_index refuses (returns nothing) when the budget exceeds 90% of
    current_memory_available or when its training estimate exceeds it; more than
    that only lets it use up to 100 training points per IVF cluster and 1 GB add
    batches, which is its default behaviour on a big machine anyway.
    """
    return max(_mem_available(), 2 * budget)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _vm_hwm(pid: int) -> int:
    """Peak RSS of `pid`'s current address space (VmHWM), 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _wait(proc: subprocess.Popen, deadline: float) -> tuple[int, int, bool]:
    """Wait for the child, polling its VmHWM, and SIGKILL its process group at the deadline.

    Returns (exit code, polled peak RSS in bytes, timed out). The process group
    goes either way, so nothing the runner started outlives the call.
    """
    timed_out = False
    peak = 0
    try:
        while proc.poll() is None:
            peak = max(peak, _vm_hwm(proc.pid))
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                _kill_group(proc.pid)
                proc.wait()
                break
            time.sleep(min(0.05, left))
    finally:
        _kill_group(proc.pid)
        if proc.returncode is None:  # interrupted (e.g. Ctrl-C): reap the killed child, then let the exception out
            proc.wait()
    return proc.returncode, peak, timed_out


def build(
    python: Path,
    embeddings_dir: Path,
    out_dir: Path,
    memory_budget_bytes: int,
    time_limit_s: float,
    nb_cores: int,
    *,
    max_query_time_ms: float | None = None,
) -> dict:
    """Let autofaiss pick and build an index for `embeddings_dir` within `memory_budget_bytes` of index size.

    Runs the runner with the venv python in a new session; past `time_limit_s`
    the whole process group is SIGKILLed and the result has status "timeout"
    (with the index key it was building, when it got that far). `peak_rss_bytes`
    is the runner's VmHWM (kernel high-water RSS of its address space since
    exec), polled every 50 ms and, when it finishes, also reported by the runner
    itself at exit; the larger is kept. Not ru_maxrss: Linux carries the forking
    parent's RSS into the child's ru_maxrss across exec, so it would count this
    process's own memory. The runner is the whole tree: autofaiss builds with
    threads and starts no processes. `wall_s`
    includes interpreter start and autofaiss import (~1 s). `max_query_time_ms`
    is autofaiss's search-time target for choosing index_param (its default,
    10 ms, if None).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index_path = out_dir / "autofaiss.index"
    infos_path = out_dir / "autofaiss_infos.json"
    log_path = out_dir / "autofaiss.log"
    for p in (index_path, infos_path):
        p.unlink(missing_ok=True)
    cmd = [
        str(python),
        "-I",  # ignore PYTHON* variables and user site-packages: only the autofaiss venv is on sys.path
        str(RUNNER),
        "--embeddings",
        str(Path(embeddings_dir).absolute()),
        "--index-path",
        str(index_path.absolute()),
        "--infos-path",
        str(infos_path.absolute()),
        "--max-index-memory-usage",
        memory_string(memory_budget_bytes),
        "--current-memory-available",
        memory_string(_current_memory(memory_budget_bytes)),
        "--metric",
        "ip",
        "--nb-cores",
        str(nb_cores),
    ]
    if max_query_time_ms is not None:
        cmd += ["--max-index-query-time-ms", str(max_query_time_ms)]
    threads = str(nb_cores)
    env = _clean_env(OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads, TQDM_DISABLE="1")

    t0 = time.monotonic()
    with open(log_path, "wb") as log_file:  # a file, not a pipe: nothing to drain while polling
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        rc, peak_rss, timed_out = _wait(proc, t0 + time_limit_s)
    wall_s = time.monotonic() - t0

    infos: dict = {}
    if infos_path.is_file():
        try:
            infos = json.loads(infos_path.read_text())
        except json.JSONDecodeError:
            infos = {}
    finished = bool(infos.get("finished")) and index_path.is_file()
    status = "timeout" if timed_out else "ok" if rc == 0 and finished else "error"
    return {
        "status": status,
        "returncode": rc,
        "wall_s": wall_s,
        "time_limit_s": time_limit_s,
        "peak_rss_bytes": max(peak_rss, infos.get("runner_vm_hwm_bytes") or 0),
        "index_path": index_path if status == "ok" else None,
        "index_key": infos.get("index_key"),
        "index_param": infos.get("index_param"),
        "autofaiss_infos": infos.get("autofaiss_infos"),
        "estimated_index_size_bytes": infos.get("estimated_index_size_bytes"),
        "candidate_index_keys": infos.get("candidate_index_keys"),
        "versions": infos.get("versions"),
        "stderr_tail": _tail(log_path.read_bytes()) if log_path.is_file() else "",
        "log_path": log_path,
    }


_PARAM = re.compile(r"\s*([A-Za-z_]\w*)\s*=\s*([^,=\s]+)\s*")


def parse_params(index_param: str) -> list[tuple[str, float]]:
    """Parse autofaiss's "nprobe=16,efSearch=32,ht=2048" ("" for Flat) into (name, value) pairs; ValueError if
    malformed."""
    if not index_param.strip():
        return []
    out = []
    for part in index_param.split(","):
        m = _PARAM.fullmatch(part)
        if not m:
            raise ValueError(f"malformed index_param {index_param!r}: bad item {part!r}")
        try:
            out.append((m.group(1), float(m.group(2))))
        except ValueError:
            raise ValueError(f"malformed index_param {index_param!r}: {part!r} is not numeric") from None
    return out


def apply_params(index: faiss.Index, index_param: str) -> None:
    """Set autofaiss's chosen search parameters on an index loaded with the project's faiss.

    Keys faiss says do not apply to this index ("could not set parameter") are
    skipped and logged; a malformed string raises ValueError.
    """
    space = faiss.ParameterSpace()
    for name, value in parse_params(index_param):
        try:
            space.set_index_parameter(index, name, value)
        except RuntimeError as e:
            if "could not set parameter" not in str(e):
                raise
            log.warning("autofaiss param %s=%g does not apply to %s; skipped", name, value, type(index).__name__)


def write_numpy_embeddings(x: np.ndarray, out_dir: Path, rows_per_file: int = 100_000) -> None:
    """Write `x` as float32 .npy files that autofaiss's numpy reader reads back in row order.

    The reader globs **/*.npy, sorts the paths and ignores fortran_order, so
    files are C-ordered with zero-padded names, and index id i is row i of `x`.
    Our previous files in `out_dir` are replaced; any other .npy there is an error
    because autofaiss would index it too.
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"need a non-empty 2-D array, got shape {x.shape}")
    if rows_per_file <= 0:
        raise ValueError("rows_per_file must be positive")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("emb_*.npy"):
        old.unlink()
    others = sorted(out_dir.glob("**/*.npy"))
    if others:
        raise ValueError(f"{out_dir} holds other .npy files autofaiss would also read: {others[:3]}")
    for i, start in enumerate(range(0, x.shape[0], rows_per_file)):
        chunk = np.ascontiguousarray(x[start : start + rows_per_file], dtype=np.float32)
        np.save(out_dir / f"emb_{i:06d}.npy", chunk)
