"""Read ingestion sources into records: a folder of images, or a CSV / JSONL / Parquet manifest.

A folder is walked recursively; an image's caption is a sidecar ``.txt`` with
the same stem. A manifest has columns ``image``, ``text`` and ``id`` (all
optional per row, but a row needs an image or a text); any other column is
kept as metadata. Relative image paths are resolved against the manifest's
folder. Bad rows are counted by reason, never raised.

A row may bring several captions of its image in a ``captions`` column: a JSON list of
strings (as text in a CSV; a JSON list or a native list in JSONL / Parquet). They are read
into :attr:`Record.captions` (blank entries dropped; a value that is not such a list gives
none) for training's ``augment.text.multi_caption``; ``text`` stays the row's one caption,
and the column is kept in the metadata like any other.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
MANIFEST_EXTENSIONS = frozenset({".csv", ".jsonl", ".parquet"})
RESERVED_COLUMNS = ("id", "image", "text")


@dataclass(frozen=True)
class Record:
    external_id: str
    image_path: str | None
    text: str | None
    metadata: dict = field(default_factory=dict)
    captions: tuple[str, ...] = ()  # the row's ``captions`` column, if it has one


@dataclass
class SourceReport:
    """What a source held: records read, and rows skipped by reason."""

    read: int = 0
    skipped: Counter = field(default_factory=Counter)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1


def derive_external_id(image_path: str | None, text: str | None) -> str:
    """A stable id for rows that bring none: hash of the resolved image path and the text.

    Path-based (not content-based) so that an unchanged source re-ingests as a no-op
    without reading every image twice.
    """
    h = hashlib.sha1()
    h.update((image_path or "").encode())
    h.update(b"\0")
    h.update((text or "").encode())
    return h.hexdigest()


def _clean(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    s = str(value).strip()
    return s or None


def _jsonable(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy / arrow scalars
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):  # a JSONL or Parquet list (e.g. `captions`) stays a list
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def parse_captions(value) -> tuple[str, ...]:
    """A ``captions`` cell as a tuple of captions: a list (or its JSON text) of strings, else ``()``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return ()
    if hasattr(value, "tolist"):  # numpy arrays from a Parquet reader
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(c, str) for c in value):
        return ()
    return tuple(c for c in (_clean(c) for c in value) if c)


def iter_folder(root: Path, report: SourceReport) -> Iterator[Record]:
    root = root.resolve()
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        text = None
        sidecar = path.with_suffix(".txt")
        if sidecar.is_file():
            try:
                text = _clean(sidecar.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                report.skip("unreadable caption")
        image = str(path)
        report.read += 1
        yield Record(
            external_id=derive_external_id(image, text),
            image_path=image,
            text=text,
            metadata={"relative_path": str(path.relative_to(root))},
        )


def _manifest_rows(path: Path, report: SourceReport) -> Iterator[dict]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            yield from csv.DictReader(f)
    elif suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    report.skip("malformed JSON line")
                    continue
                if not isinstance(row, dict):
                    report.skip("malformed JSON line")
                    continue
                yield row
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    else:
        raise ValueError(f"unsupported manifest type {suffix!r}: use .csv, .jsonl or .parquet")


def iter_manifest(path: Path, report: SourceReport) -> Iterator[Record]:
    path = path.resolve()
    base = path.parent
    for row in _manifest_rows(path, report):
        image = _clean(row.get("image"))
        text = _clean(row.get("text"))
        if image is None and text is None:
            report.skip("row has neither image nor text")
            continue
        if image is not None:
            p = Path(image).expanduser()
            p = p if p.is_absolute() else base / p
            if not p.is_file():
                report.skip("image file missing")
                continue
            image = str(p.resolve())
        ext_id = _clean(row.get("id")) or derive_external_id(image, text)
        meta = {k: _jsonable(v) for k, v in row.items() if k not in RESERVED_COLUMNS and k}
        report.read += 1
        yield Record(external_id=ext_id, image_path=image, text=text, metadata=meta,
                     captions=parse_captions(row.get("captions")))  # fmt: skip


def iter_source(source: str | Path, report: SourceReport) -> Iterator[Record]:
    """Records from a folder or a manifest file; raises only when the source itself is unusable."""
    path = Path(source).expanduser()
    if path.is_dir():
        return iter_folder(path, report)
    if path.is_file():
        if path.suffix.lower() not in MANIFEST_EXTENSIONS:
            raise ValueError(f"{path} is neither a folder nor a manifest (.csv, .jsonl, .parquet)")
        return iter_manifest(path, report)
    raise FileNotFoundError(f"no such folder or manifest: {path}")
