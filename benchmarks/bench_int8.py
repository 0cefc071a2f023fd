"""int8 towers (`CROSSMODAL_RUNTIME=onnx-int8`): does recall survive, and what do they buy?

For each evaluation world, `builtin:lit-mini-spp` gets its heads bootstrapped on the world's train
pairs (untrained heads would make any recall comparison meaningless), is saved as a checkpoint,
and loaded the way the service loads it with `onnx-int8`: the gate (`app/int8.py`) quantises the
towers, measures t2i and i2t R@1 of fp32 ONNX and int8 on the evaluation set and accepts int8 only
if neither drops by more than 0.5 points. Reported: both R@1s, the drops, the verdict, and the
encode latency of torch eager, fp32 ONNX and int8 (interleaved, batch 1) on the synthetic model.

- synthetic: the shapes world (generated, 2,000 items), gated on its test split;
- emoji: the real emoji data (`crossmodal datasets emoji`, `data/emoji`), trained on `train.jsonl`,
  gated on `heldout_house.jsonl` (the held-out house drawing the train concepts, concept hit rule).

    .venv/bin/python benchmarks/bench_int8.py [--emoji data/emoji] [--repeats 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.runtime import apply_runtime_defaults  # noqa: E402

apply_runtime_defaults()

from app.config import Settings  # noqa: E402
from app.encoders import load_encoder  # noqa: E402
from app.pipelines.bootstrap import manifest_pairs  # noqa: E402
from benchmarks._report import record  # noqa: E402
from crossmodal_kernel.checkpoints import save_checkpoint  # noqa: E402
from crossmodal_kernel.encoder import Encoder  # noqa: E402
from crossmodal_kernel.images import open_image  # noqa: E402
from crossmodal_kernel.loading import load_model  # noqa: E402
from training.bootstrap import BootstrapConfig, bootstrap_heads  # noqa: E402
from training.synthetic.shapes import generate_dataset  # noqa: E402

MODEL = "builtin:lit-mini-spp"


def trained_spec(tmp: Path, name: str, train_manifest: Path) -> str:
    """The model with heads bootstrapped on ``train_manifest``'s train rows, as a checkpoint spec."""
    pairs, captions = manifest_pairs(train_manifest, "train")
    if not pairs:
        pairs, captions = manifest_pairs(train_manifest, None)
    loaded = load_model(MODEL, "cpu")
    bootstrap_heads(loaded, pairs, BootstrapConfig(num_workers=1), None, captions if any(captions) else None)
    checkpoint = save_checkpoint(loaded, tmp / "models" / name / "checkpoint.pt")
    return f"{MODEL}@{checkpoint}"


def gate(tmp: Path, spec: str, eval_set: Path) -> tuple[Encoder, list[dict]]:
    """The service's int8 gate on ``spec``: what serves, and each verdict it reached (both towers, text only)."""
    settings = Settings(data_dir=tmp, device="cpu", int8_eval_set=eval_set)
    t0 = time.perf_counter()
    encoder = load_encoder(settings, spec, runtime="onnx-int8")
    seconds = time.perf_counter() - t0
    folder = Path(spec.split("@", 1)[1]).parent / "onnx"
    found = [*folder.glob("*-int8.verdict-*.json"), *folder.glob("*-int8-text.verdict-*.json")]
    verdicts = [json.loads(p.read_text()) for p in found] or [{"why": "; ".join(encoder.runtime_warnings)}]
    return encoder, [{**v, "gate_seconds": seconds, "serving": dict(encoder.runtimes)} for v in verdicts]


def latencies(spec: str, tmp: Path, eval_set: Path, repeats: int) -> dict[str, dict[str, float]]:
    """Batch-1 ms of torch, fp32 ONNX and int8 (the int8 encoder built regardless of the gate)."""
    from app import int8 as int8_gate
    from crossmodal_kernel.onnx_encoder import OnnxEncoder, open_sessions
    from crossmodal_kernel.onnx_quant import cached_or_quantize

    settings = Settings(data_dir=tmp, device="cpu")
    torch_enc = load_encoder(settings, spec, runtime="torch")
    onnx_enc = load_encoder(settings, spec, runtime="onnx")
    assert isinstance(onnx_enc, OnnxEncoder) and onnx_enc.graphs is not None
    graphs = cached_or_quantize(onnx_enc.graphs, lambda: None)  # already quantised by the gate
    int8_enc = OnnxEncoder(onnx_enc.loaded, open_sessions(graphs, onnx_enc.device), runtime="onnx-int8")
    images = [open_image(p) for p in int8_gate.eval_pairs(eval_set).images[:8]]
    texts = [f"a small red circle in the top left {i}" for i in range(repeats + 2)]
    out: dict[str, dict[str, list[float]]] = {}
    for i in range(repeats + 2):
        for name, enc in (("torch", torch_enc), ("onnx", onnx_enc), ("onnx-int8", int8_enc)):
            for case in ("text", "image"):
                t0 = time.perf_counter()
                if case == "text":
                    enc.encode_texts([texts[i]])
                else:
                    enc.encode_images(images[i % 8 : i % 8 + 1])
                if i >= 2:
                    out.setdefault(name, {}).setdefault(case, []).append((time.perf_counter() - t0) * 1000)
    return {name: {case: statistics.median(ms) for case, ms in cases.items()} for name, cases in out.items()}


def _row(name: str, verdict: dict) -> str:
    if "fp32" not in verdict:
        return f"| {name} | | | | | | | not measured: {verdict['why']} |"
    f, q, d = verdict["fp32"], verdict["int8"], verdict["drop_points"]
    passes = "passes" if verdict["accepted"] else "fails"
    return (
        f"| {name}, int8 {verdict['towers']} | {f['t2i_R@1']:.4f} | {q['t2i_R@1']:.4f} | {d['t2i_R@1']:+.2f} | "
        f"{f['i2t_R@1']:.4f} | {q['i2t_R@1']:.4f} | {d['i2t_R@1']:+.2f} | {passes} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--emoji", type=Path, default=Path("data/emoji"))
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    world = generate_dataset(tmp / "world", n=args.items, seed=0).root
    worlds = {"synthetic (shapes, test split)": (world / "manifest.csv", world)}
    if (args.emoji / "train.jsonl").is_file():
        worlds["emoji (held-out house)"] = (args.emoji / "train.jsonl", args.emoji / "heldout_house.jsonl")
    results: dict = {}
    rows: list[str] = []
    speed: dict[str, dict[str, float]] = {}
    for i, (name, (train, eval_set)) in enumerate(worlds.items()):
        spec = trained_spec(tmp, str(i), train)
        encoder, verdicts = gate(tmp, spec, eval_set)
        results[name] = verdicts
        print(name, verdicts, flush=True)
        for verdict in verdicts:
            rows.append(_row(name, verdict))
        rows.append(f"| {name}: **served** | | | | | | | {encoder.runtimes} |")
        if i == 0:
            speed = latencies(spec, tmp, eval_set, args.repeats)
            results["latency_ms"] = speed
    base = speed["torch"]
    speed_rows = "\n".join(
        f"| {rt} | {v['text']:.2f} ({base['text'] / v['text']:.2f}x) | "
        f"{v['image']:.2f} ({base['image'] / v['image']:.2f}x) |"
        for rt, v in speed.items()
    )
    table = "\n".join(rows)
    md = f"""## int8 towers (`benchmarks/bench_int8.py`)

`{MODEL}` with heads bootstrapped on each world's train pairs, loaded with `CROSSMODAL_RUNTIME=onnx-int8`:
the text tower's matrix products quantised dynamically (int8 weights per channel), the image tower
statically (QDQ, calibrated on up to 64 images of the evaluation manifest's train split, else of the
set itself). The gate serves int8 only if neither R@1 drops by more than 0.5 points against fp32 ONNX:
both towers if they pass, else the text tower alone if it passes, else fp32 ONNX.

| evaluation set, variant | t2i R@1 fp32 | int8 | drop (points) | i2t R@1 fp32 | int8 | drop | gate |
|---|---|---|---|---|---|---|---|
{table}

Batch-1 encode latency on the synthetic model (median ms, interleaved; speed-up against torch eager;
image: a decoded drawing with its preprocessing):

| runtime | text ms | image ms |
|---|---|---|
{speed_rows}

Reproduce: `.venv/bin/python benchmarks/bench_int8.py --items {args.items} --repeats {args.repeats}`
"""
    print(md)
    if not args.no_record:
        record("encode-int8", results, md)


if __name__ == "__main__":
    main()
