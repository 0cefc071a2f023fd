"""Write a benchmark's JSON result and replace its section of docs/benchmarks.md.

A section is the text between ``<!-- name:begin -->`` and ``<!-- name:end -->``. A rerun
replaces it in place; a name not yet in the file is appended at the end. docs/benchmarks.md
nests some sections under a heading of their own (one heading per benchmark, several runs
under it): a replaced section keeps the heading level its previous version had there.
"""

from __future__ import annotations

import json
import platform
import re
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"

_HEADING = re.compile(r"^(#{1,6}) ")


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def _headings(markdown: str):
    """(line index, level) of each Markdown heading outside fenced code blocks."""
    fenced = False
    for i, line in enumerate(markdown.split("\n")):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := _HEADING.match(line)):
            yield i, len(m.group(1))


def nest_like(markdown: str, previous: str) -> str:
    """``markdown`` with its headings shifted so that its first is at the level of ``previous``'s first."""
    old, new = next(_headings(previous), None), next(_headings(markdown), None)
    if old is None or new is None or old[1] == new[1]:
        return markdown
    shift = old[1] - new[1]
    lines = markdown.split("\n")
    for i, level in list(_headings(markdown)):
        lines[i] = "#" * min(6, max(1, level + shift)) + lines[i][level:]
    return "\n".join(lines)


def record(name: str, result: dict, markdown: str) -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if text.count(begin) != text.count(end):
        # A lone marker would make the pattern below run from it to the next block's end and
        # swallow everything in between; refuse before writing anything.
        raise ValueError(f"{DOC}: {text.count(begin)} '{begin}' but {text.count(end)} '{end}'; fix the markers")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "date": time.strftime("%Y-%m-%d"), "machine": machine(), **result}
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    pattern = re.compile(re.escape(begin) + "(.*?)" + re.escape(end), re.S)

    def section(previous: str) -> str:
        return f"{begin}\n{nest_like(markdown.strip(), previous)}\n{end}"

    text = (
        pattern.sub(lambda m: section(m.group(1)), text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section("") + "\n"
    )
    DOC.write_text(text)
