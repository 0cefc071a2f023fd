"""The openclipart dataset builder (training/openclipart.py) on a folder of small SVGs written here:
the words it reads, the rows it writes, the drawings it renders, and its errors."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from tests.helpers.openclipart import svg, write_svg
from training import openclipart
from training.openclipart import OpenclipartError, build_openclipart, read_words, row_for

needs_renderer = pytest.mark.skipif(shutil.which("rsvg-convert") is None, reason="apt-get install librsvg2-bin")


def test_the_words_are_the_works_own_not_its_authors(tmp_path):
    path = write_svg(tmp_path, "food/beer.svg", svg("Cold Beer", "A glass of beer", ("Food", "beverage", "", "food")))
    words = read_words(path)
    assert words.title == "Cold Beer" and words.description == "A glass of beer"
    assert words.keywords == ("food", "beverage")  # lower-cased, empty and repeated ones dropped; no "Ann Artist"
    assert read_words(write_svg(tmp_path, "bad.svg", "<svg><metadata>")).title == ""  # unreadable: no words


def test_a_row_names_the_drawing_by_its_title_else_by_its_file_name(tmp_path):
    path = write_svg(tmp_path, "food/beer_ann_01.svg", "")
    row = row_for(path, tmp_path, "images/food/beer_ann_01.png", openclipart.Words("Cold Beer", "frothy", ("food",)))
    assert row is not None
    assert row["text"] == "Cold Beer" and row["captions"] == ["Cold Beer", "frothy", "food"]
    assert row["split"] == "train" and row["concept"] == "openclipart:food/beer_ann_01"
    assert row["category"] == "food" and row["named_by"] == "title"
    # a byline prefix is not part of the name
    assert row_for(path, tmp_path, "x.png", openclipart.Words("Clipart by Nicu Buculei beer", "", ()))["text"] == "beer"
    # a collection's name (shared by many drawings) or no title: the file name's words
    shared = frozenset({"lemon svg theme"})
    icon = write_svg(tmp_path, "computer/14_insert_knots2.svg", "")
    named = row_for(icon, tmp_path, "x.png", openclipart.Words("Lemon SVG theme", "", ("icons",)), shared)
    assert (
        named["text"] == "insert knots"
        and named["named_by"] == "file name"
        and named["captions"]
        == [
            "insert knots",
            "icons",
        ]
    )
    assert row_for(write_svg(tmp_path, "x/12_3.svg", ""), tmp_path, "x.png", openclipart.Words("", "", ())) is None


def test_collections_and_the_cap_per_text():
    titles = ["Lemon SVG theme"] * 10 + ["Clipart by Nicu Buculei beer"] * 3 + ["cat"] * 9
    assert openclipart.collection_titles(titles) == frozenset({"lemon svg theme"})
    rows = [{"text": t} for t in ["star", "Star", "star", "star", "moon"]]
    assert [r["text"] for r in openclipart.capped(rows, per_text=2)] == ["star", "Star", "moon"]


@needs_renderer
def test_build_renders_square_transparent_pngs_and_writes_the_manifest(tmp_path):
    source = tmp_path / "svg"
    write_svg(source, "food/beer.svg", svg("Cold Beer", keywords=("food",), width=40, height=20))
    write_svg(source, "animals/cat_bob_01.svg", svg("", keywords=("animal",), width=10, height=30, colour="blue"))
    write_svg(source, "animals/broken.svg", "<svg><rect")  # neither renders nor reads
    seen: list[tuple[str, int, int]] = []
    out = tmp_path / "out"
    summary = build_openclipart(out, source, size=32, progress=lambda *a: seen.append(a))
    assert summary["drawings"] == 3 and summary["rows"] == 2 and summary["skipped"]["render_failed"] == 1
    assert seen[-1] == ("render openclipart", 3, 3)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["text"] for r in rows) == ["Cold Beer", "cat bob"]
    for row in rows:
        with Image.open(out / row["image"]) as image:
            assert image.size == (32, 32) and image.mode == "RGBA"
            assert image.getpixel((0, 0))[3] == 0 or image.getpixel((31, 31))[3] == 0  # padded, transparent
            assert image.getpixel((16, 16))[3] == 255  # the drawing, centred
    assert json.loads((out / "dataset.json").read_text())["rows"] == 2


@needs_renderer
def test_build_refuses_a_folder_where_most_drawings_fail(tmp_path):
    source = tmp_path / "svg"
    write_svg(source, "a/good.svg", svg("good"))
    for i in range(3):
        write_svg(source, f"a/bad{i}.svg", "<svg><rect")
    with pytest.raises(OpenclipartError, match="only 1 of 4 drawings"):
        build_openclipart(tmp_path / "out", source)


def test_missing_package_or_renderer_say_what_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("CROSSMODAL_OPENCLIPART_DIR", raising=False)
    monkeypatch.setattr(openclipart, "SOURCE_DIRS", (tmp_path / "none",))
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)
    with pytest.raises(OpenclipartError, match="apt-get install openclipart-svg"):
        build_openclipart(tmp_path / "out")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(OpenclipartError, match="apt-get install librsvg2-bin"):
        build_openclipart(tmp_path / "out", tmp_path)
