"""Openclipart as training data: Debian's ``openclipart-svg`` drawings, rendered, with their own words.

Issue 23 allows one more source beside the emoji sets: Debian's ``openclipart-svg`` package, 8,121
public-domain drawings by many artists, each with a title, sometimes a description, and keywords,
written by whoever uploaded it: noisy, much like web alt-text. It adds concepts the emoji sets do
not have, which is what the held-out concepts lack (docs/findings.md F31).

:func:`build_openclipart` renders each SVG to a square PNG (``rsvg-convert``, Debian's
``librsvg2-bin``; transparent background, the drawing fitted and centred) and writes one manifest row
per drawing that has words: ``text`` its title (else the words of its file name), ``captions`` the
title, the description when it says something else, and each keyword; ``concept`` the file (every
drawing is its own concept), ``split`` ``train``. A drawing that fails to render or has no words is
counted and left out; a run where most fail is an error.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from crossmodal_kernel import atomic

SOURCE_DIRS = (Path("/usr/share/openclipart/svg"),)
PACKAGE = "openclipart-svg"
RENDERER = "rsvg-convert"
DC = "{http://purl.org/dc/elements/1.1/}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
MAX_CAPTIONS = 12
COLLECTION = 10  # a title this many drawings share names their collection
PER_TEXT = 3  # rows kept per distinct text
Progress = Callable[[str, int, int], None]  # (stage, done, total)
_SPACES = re.compile(r"[\s_\-]+")
_WORDS = re.compile(r"[^\W\d_]{2,}")  # runs of two or more letters: a file name's words
# Titles that say nothing about the drawing (a collection's or an editor's name, a file name)
_BY = re.compile(r"^clip ?art by [A-Z][\w.]* [A-Z][\w.]* ", re.I)  # "Clipart by Nicu Buculei beer"
_EMPTY_TITLE = re.compile(r"^(untitled|image|drawing|svg|layer|clipart|open ?clip ?art.*|.*\.svg)$", re.I)


class OpenclipartError(RuntimeError):
    """The package or the renderer is missing, or too few drawings could be read."""


@dataclass(frozen=True)
class Words:
    """What a drawing's metadata says about it."""

    title: str
    description: str
    keywords: tuple[str, ...]


def find_source(explicit: Path | None = None) -> Path:
    """The folder of SVGs: ``explicit``, ``$CROSSMODAL_OPENCLIPART_DIR`` or the Debian package's."""
    env = os.environ.get("CROSSMODAL_OPENCLIPART_DIR")
    candidates = [explicit] if explicit is not None else [Path(env)] if env else list(SOURCE_DIRS)
    for folder in candidates:
        if folder is not None and folder.is_dir() and next(folder.rglob("*.svg"), None) is not None:
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise OpenclipartError(
        f"no openclipart SVGs in {tried}: install Debian's {PACKAGE} (apt-get install {PACKAGE}) "
        "or point CROSSMODAL_OPENCLIPART_DIR (or --source) at a folder of them"
    )


def _clean(text: str | None) -> str:
    return _SPACES.sub(" ", text or "").strip()


def read_words(svg: Path) -> Words:
    """The title, description and keywords of the drawing's own work record (``cc:Work``), not its
    author's or publisher's (those are ``dc:title`` too, further down); empty when unreadable."""
    try:
        root = ET.parse(svg).getroot()
    except (ET.ParseError, OSError, ValueError):
        return Words("", "", ())
    work = next((e for e in root.iter() if isinstance(e.tag, str) and e.tag.endswith("}Work")), None)
    if work is None:
        return Words("", "", ())
    title = _clean(work.findtext(f"{DC}title"))
    if _EMPTY_TITLE.match(title):
        title = ""
    description = _clean(work.findtext(f"{DC}description"))
    subject = work.find(f"{DC}subject")
    seen: dict[str, None] = {}
    for li in subject.iter(f"{RDF}li") if subject is not None else ():
        word = _clean(li.text).lower()
        if word and word != title.lower():
            seen.setdefault(word, None)
    return Words(title, description, tuple(seen))


def name_words(svg: Path) -> str:
    """A title from the file name's words (runs of two or more letters): ``14_insertknots`` is
    "insertknots", ``aiga_arriving_flights1`` "aiga arriving flights"."""
    return " ".join(_WORDS.findall(svg.stem))


def row_for(
    svg: Path, source: Path, image: str, words: Words, collections: frozenset[str] = frozenset()
) -> dict | None:
    """The manifest row of one drawing, or None when nothing names it. A title in ``collections`` (shared by
    many drawings: "Lemon SVG theme", "AIGA Symbol Signs") names the set, not the drawing: the file name does."""
    title = _BY.sub("", words.title)
    named_by = "title" if title and title.lower() not in collections else "file name"
    text = title if named_by == "title" else name_words(svg)
    if not text:
        return None
    captions = [text]
    if words.description and words.description.lower() not in (text.lower(), words.title.lower()):
        if len(words.description) <= 200 and words.description.lower() not in collections:
            captions.append(words.description)
    captions += [k for k in words.keywords if k != text.lower()]
    rel = svg.relative_to(source)
    return {
        "image": image,
        "text": text,
        "captions": captions[:MAX_CAPTIONS],
        "split": "train",
        "concept": f"openclipart:{rel.with_suffix('').as_posix()}",
        "house": "openclipart",
        "category": rel.parts[0] if len(rel.parts) > 1 else "",
        "named_by": named_by,
    }


def collection_titles(titles: Sequence[str], at_least: int = COLLECTION) -> frozenset[str]:
    """Titles (lower-cased) that ``at_least`` drawings share: a collection's name, not a drawing's."""
    counts = Counter(_BY.sub("", t).lower() for t in titles if t)
    return frozenset(t for t, n in counts.items() if n >= at_least)


def capped(rows: list[dict], per_text: int = PER_TEXT) -> list[dict]:
    """At most ``per_text`` rows of one text (1,375 stars by one artist are one concept, not 1,375)."""
    seen: Counter[str] = Counter()
    out = []
    for row in rows:
        seen[row["text"].lower()] += 1
        if seen[row["text"].lower()] <= per_text:
            out.append(row)
    return out


def render(svg: Path, png: Path, size: int, timeout: float = 20.0) -> bool:
    """``svg`` fitted into a ``size`` x ``size`` transparent square, centred, as ``png``; False if it fails.
    ``png`` appears whole or not at all (a killed run leaves no half-written drawing for the next to keep)."""
    try:
        done = subprocess.run(
            [RENDERER, "-w", str(size), "-h", str(size), "-a", "-f", "png", str(svg)],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0 or not done.stdout:
            return False
        with Image.open(io.BytesIO(done.stdout)) as raw:
            drawn = raw.convert("RGBA")
        canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        canvas.paste(drawn, ((size - drawn.width) // 2, (size - drawn.height) // 2))
        png.parent.mkdir(parents=True, exist_ok=True)
        tmp = atomic.temp_sibling(png)
        try:
            canvas.save(tmp, format="PNG")
            os.replace(tmp, png)
        finally:
            tmp.unlink(missing_ok=True)
        return True
    except (subprocess.TimeoutExpired, OSError, ValueError):
        return False


def _package_version() -> str | None:
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", PACKAGE], capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def build_openclipart(
    out: Path,
    source: Path | None = None,
    size: int = 64,
    limit: int | None = None,
    progress: Progress | None = None,
) -> dict:
    """Render the drawings into ``out/images`` and write ``out/manifest.jsonl`` and ``out/dataset.json``
    (what was read, skipped and why). ``limit`` takes the first drawings in path order.
    ``progress(stage, done, total)`` hears of each drawing done. A drawing rendered by an earlier run is kept."""
    if shutil.which(RENDERER) is None:
        raise OpenclipartError(f"{RENDERER} is not installed: apt-get install librsvg2-bin")
    folder = find_source(source)
    svgs = sorted(folder.rglob("*.svg"))[:limit]
    images = out / "images"
    lock, done = threading.Lock(), [0]

    def advance() -> None:
        with lock:  # the renders run on a pool; the progress bar is not thread-safe
            done[0] += 1
            if progress is not None:
                progress("render openclipart", done[0], len(svgs))

    pngs = [images / svg.relative_to(folder).with_suffix(".png") for svg in svgs]

    def one(svg: Path, png: Path) -> tuple[Words, bool]:
        ok = png.exists() or render(svg, png, size)
        advance()
        return read_words(svg), ok

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        read = list(pool.map(one, svgs, pngs))
    collections = collection_titles([w.title for w, _ in read])
    results: list[tuple[str, dict | None]] = []
    for svg, png, (words, ok) in zip(svgs, pngs, read, strict=True):
        row = row_for(svg, folder, png.relative_to(out).as_posix(), words, collections) if ok else None
        results.append(("render_failed" if not ok else "ok" if row is not None else "no_words", row))
    return _write(out, folder, svgs, results, size)


def _write(out: Path, folder: Path, svgs: Sequence[Path], results: list[tuple[str, dict | None]], size: int) -> dict:
    usable = [row for _, row in results if row is not None]
    counts = {status: sum(s == status for s, _ in results) for status in ("ok", "render_failed", "no_words")}
    rows = capped(usable)
    counts["same_text_beyond_cap"] = len(usable) - len(rows)
    if len(usable) < len(svgs) / 2:
        raise OpenclipartError(f"only {len(usable)} of {len(svgs)} drawings could be used from {folder}: {counts}")
    atomic.write_text(out / "manifest.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    summary = {
        "source": str(folder),
        "package": PACKAGE,
        "package_version": _package_version(),
        "size": size,
        "drawings": len(svgs),
        "rows": len(rows),
        "skipped": {k: v for k, v in counts.items() if k != "ok"},
        "named_by_file_name": sum(r["named_by"] == "file name" for r in rows),
    }
    atomic.write_text(out / "dataset.json", json.dumps(summary, indent=2) + "\n")
    return summary
