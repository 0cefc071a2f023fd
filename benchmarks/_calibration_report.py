"""The markdown section of benchmarks/bench_calibration.py: F1 tables, calibration figures, the goal, the cost."""

from __future__ import annotations

from training import calibration as cal

WORDINGS = ("name", "short name", "keywords", "other keywords")
LEVEL = 0.5  # the min_relevance measured


def _f1_row(label: str, cells: dict, extra: str = "") -> str:
    return f"| {label} | " + " | ".join(f"{cells[w]['F1']:.3f}" for w in ("all", *WORDINGS) if w in cells) + \
        f" |{extra}"  # fmt: skip


def markdown(result: dict) -> str:
    q = result["quality"]
    lines = [
        "## Calibrated relevance on real data (`benchmarks/bench_calibration.py`)",
        "",
        f"{result['items']} drawings by {', '.join(result['houses'])}, model `{result['model']}` bootstrapped on "
        "trainval; a hit is relevant when it is a drawing (text -> image) or a name (image -> text) of the query's "
        f"concept. Held-out queries: {result['held_concepts']} concepts neither fit saw, worded as the captions "
        "(name) and as people word them (short name, keywords, other keywords), and each of their drawings as an "
        f"image query. Returned set: the top {result['window']} hits at `min_relevance: {LEVEL}` (calibrated), or "
        "at a fixed `min_score` chosen on the calibration's own fit set (the best mean per-query F1 there), or at "
        "the best fixed `min_score` in hindsight (chosen on the held-out queries themselves). Fit sets: "
        "`bootstrap` = the bootstrap's held-out pairs (what a bootstrapped model starts with), `db` = the "
        "database's held-out items against the whole collection (what a promotion stores). The service's "
        f"default method: `{result['default']}`.",
        "",
        f"Reproduce (after `crossmodal datasets emoji data/emoji`; the first run bootstraps and ingests into "
        f"`--work`, minutes on a CPU, later runs reuse it and measure in {result['seconds']:.0f} s): "
        f"`{result['command'].strip()}`",
    ]
    for direction in ("text->image", "image->text"):
        first = q[f"db | {direction}"]["fixed"]
        cols = [w for w in ("all", *WORDINGS) if w in first]
        counts = ", ".join(f"{w} {first[w]['n']}" for w in cols)
        lines += ["", f"Mean per-query F1, {direction} ({counts} queries):", ""]
        lines += ["| returned set | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for fit in ("bootstrap", "db"):
            cell = q[f"{fit} | {direction}"]
            for name, v in cell["variants"].items():
                lines.append(_f1_row(f"{fit}: relevance >= {LEVEL} ({name})", v))
            lines.append(
                _f1_row(f"{fit}: min_score {cell['fixed_min_score']:.3f} (best on the fit set)", cell["fixed"])
            )
        lines.append(_f1_row("best fixed min_score in hindsight (per column)", q[f"hindsight | {direction}"]))
        lines.append(_f1_row("the top hit alone", q[f"top hit | {direction}"]))
    lines += _calibration_lines(result)
    return "\n".join(lines)


def _calibration_lines(result: dict) -> list[str]:
    q, default = result["quality"], result["default"]
    lines = ["", f"Calibration of `{default}` on the held-out queries' top {cal.DEPTH} hits (ECE: expected "
             "calibration error, 10 equal-width bins; reliability: mean predicted vs observed rate per bin):",
             ""]  # fmt: skip
    lines += [
        "| fit | direction | ECE | Brier | reliability (bin: n, predicted -> observed) |",
        "|---|---|---|---|---|",
    ]
    for fit in ("bootstrap", "db"):
        for direction in ("text->image", "image->text"):
            figures = q[f"{fit} | {direction}"]["variants"][default]["calibration"]
            curve = "; ".join(f"{b['low']:.1f}: {b['n']}, {b['predicted']:.2f} -> {b['observed']:.2f}"
                              for b in figures["curve"] if b["n"])  # fmt: skip
            lines.append(f"| {fit} | {direction} | {figures['ece']:.3f} | {figures['brier']:.3f} | {curve} |")
    lines += [
        "",
        "Goal: calibrated relevance (`min_relevance: 0.5`) gives a better F1 on the held-out queries than the best "
        "fixed `min_score` chosen on the same fit data; beside it, the best fixed `min_score` in hindsight, which no "
        "cutoff chosen beforehand can know:",
        "",
    ]
    for fit in ("bootstrap", "db"):
        for direction in ("text->image", "image->text"):
            mine = q[f"{fit} | {direction}"]["variants"][default]["all"]["F1"]
            fixed = q[f"{fit} | {direction}"]["fixed"]["all"]["F1"]
            hindsight = q[f"hindsight | {direction}"]["all"]["F1"]
            lines.append(
                f"- {fit}, {direction}: F1 {mine:.3f} against {fixed:.3f} ({mine - fixed:+.3f}): "
                f"**{'met' if mine > fixed else 'not met'}**; against the best in hindsight {hindsight:.3f} "
                f"({mine - hindsight:+.3f})"
            )
    agree = result["service"]
    lines += ["", f"Service path: on {agree['queries']} held-out name queries `run_search` (vector mode, the stored "
              f"`db` calibration) gave every hit the map's relevance and returned exactly the hits at or above "
              f"{LEVEL} for {agree['agree']} of them."]  # fmt: skip
    return lines + _cost_lines(agree.get("p50_ms") or {})


def _cost_lines(p50: dict[str, float]) -> list[str]:
    """What relevance costs a search: p50 with the calibration over p50 with none, per mode, same run."""
    if not p50:
        return []
    lines = ["", "Cost of relevance: `run_search` p50 (k=10, SQLite, text vectors cached), calibrated over "
             "uncalibrated on the same warm state, interleaved:", "",
             "| mode | uncalibrated ms | calibrated ms | ratio |", "|---|---|---|---|"]  # fmt: skip
    for mode in ("vector", "lexical", "hybrid"):
        plain, calibrated = p50[f"{mode} | none"], p50[f"{mode} | calibrated"]
        lines.append(f"| {mode} | {plain:.2f} | {calibrated:.2f} | {calibrated / plain:.2f} |")
    return lines
