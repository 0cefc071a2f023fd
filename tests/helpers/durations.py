"""Longest files first: the order ``make test`` hands test files to its xdist workers.

``--dist loadfile`` keeps each file on one worker (module fixtures are built once) and, with
``--no-loadscope-reorder``, hands files out in collection order. A 2-minute end-to-end file handed
out last would run alone at the end while the other worker idles; longest-first (LPT) scheduling
keeps both busy to the end. The estimates are the seconds each file took in a recorded run
(``tests/durations.json``); a file not recorded counts :data:`UNKNOWN_SECONDS`. Refresh it after
a change in what the heavy tests do:

    .venv/bin/python -m pytest -n auto --dist loadfile --junitxml=junit.xml
    .venv/bin/python -m tests.helpers.durations junit.xml
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest

FILE = Path(__file__).resolve().parents[1] / "durations.json"
UNKNOWN_SECONDS = 2.0


def load() -> dict[str, float]:
    try:
        return json.loads(FILE.read_text())
    except (OSError, ValueError):
        return {}


def longest_files_first(items: list[pytest.Item], seconds: dict[str, float]) -> None:
    """Reorder ``items`` in place: files by recorded seconds, longest first (ties and unknown files in
    collection order, so every xdist worker computes the same order); tests within a file keep theirs."""
    order: dict[str, int] = {}
    for item in items:
        order.setdefault(item.nodeid.split("::")[0], len(order))
    key = {path: (-seconds.get(path, UNKNOWN_SECONDS), n) for path, n in order.items()}
    items.sort(key=lambda item: key[item.nodeid.split("::")[0]])


def from_junit(path: Path) -> dict[str, float]:
    """Seconds per test file (setup, call and teardown of its tests) in a ``--junitxml`` report."""
    per_file: dict[str, float] = defaultdict(float)
    for case in ET.parse(path).iter("testcase"):
        module = case.get("classname", "")
        parts = module.split(".")
        while parts and not parts[-1].startswith("test_"):  # a class name after the module's
            parts.pop()
        if parts:
            per_file["/".join(parts) + ".py"] += float(case.get("time", 0))
    return {name: round(per_file[name], 1) for name in sorted(per_file, key=lambda n: -per_file[n])}


if __name__ == "__main__":
    recorded = from_junit(Path(sys.argv[1]))
    FILE.write_text(json.dumps(recorded, indent=1) + "\n")
    print(f"{FILE}: {len(recorded)} files, {sum(recorded.values()):.0f} s in all")
