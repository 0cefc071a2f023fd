"""Write a benchmark's JSON result and replace its section of docs/benchmarks.md.

A section is the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` (markers on lines
of their own). A rerun replaces it in place, so the file holds one copy of each run: the latest.
docs/benchmarks.md nests some sections under a heading of their own (one heading per benchmark,
several experiments under it): a replaced section keeps the heading level its previous version had.

A name not yet in the file goes into its benchmark's section, not to the end of the file: after
the closest relative already there (the block whose name shares the most leading ``-`` words with
it, at least two or the relative's whole name, the last such block on a tie) and the text that
follows that block, before the next heading at the relative's level or above, and at the
relative's heading level. A name with no relative is appended at the end.
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
_BEGIN = re.compile(r"^<!-- ([A-Za-z0-9_.-]+):begin -->$", re.M)


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


def _shared_words(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split("-"), b.split("-"), strict=False):
        if x != y:
            break
        n += 1
    return n


def _relative(name: str, text: str) -> re.Match | None:
    """The begin marker of the block ``name`` belongs beside (see the module docstring), or None."""
    best, best_n = None, 0
    for m in _BEGIN.finditer(text):
        n = _shared_words(name, m.group(1))
        if (n >= 2 or n == len(m.group(1).split("-"))) and n >= best_n:
            best, best_n = m, n
    return best


def _insert_beside(relative: re.Match, text: str, block: str) -> str:
    """``text`` with ``block`` after ``relative``'s block and the text after it, before the next heading
    at that block's level or above (or the begin marker just above that heading)."""
    end = text.index(f"<!-- {relative.group(1)}:end -->", relative.end())
    end = text.index("\n", end) + 1 if "\n" in text[end:] else len(text)
    first = next(_headings(text[relative.end() : end]), None)
    level = first[1] if first else 2
    lines = text[end:].split("\n")
    cut = len(lines)
    for i, found in _headings(text[end:]):
        if found <= level:
            cut = i
            while cut > 0 and not lines[cut - 1].strip():
                cut -= 1
            if cut > 0 and _BEGIN.match(lines[cut - 1]):
                cut -= 1
            break
    before = (text[:end] + "\n".join(lines[:cut])).rstrip()
    after = "\n".join(lines[cut:]).lstrip("\n")
    return before + "\n\n" + block + "\n" + ("\n" + after if after else "")


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

    if pattern.search(text):
        text = pattern.sub(lambda m: section(m.group(1)), text)
    elif (relative := _relative(name, text)) is not None:
        previous = text[relative.end() : text.index(f"<!-- {relative.group(1)}:end -->", relative.end())]
        text = _insert_beside(relative, text, section(previous))
    else:
        text = text.rstrip() + "\n\n" + section("") + "\n"
    DOC.write_text(text)
