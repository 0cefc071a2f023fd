import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from training.sources import SourceReport, derive_external_id, iter_source


def _png(path, colour=(255, 0, 0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def test_folder_is_walked_recursively_with_sidecar_captions(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("  a red square \n")
    _png(tmp_path / "sub" / "b.jpg")
    (tmp_path / "notes.md").write_text("not an image")
    report = SourceReport()
    records = list(iter_source(tmp_path, report))
    assert [r.metadata["relative_path"] for r in records] == ["a.png", "sub/b.jpg"]
    assert records[0].text == "a red square" and records[1].text is None
    assert report.read == 2 and not report.skipped


def test_external_ids_are_stable_across_runs(tmp_path):
    _png(tmp_path / "a.png")
    first = [r.external_id for r in iter_source(tmp_path, SourceReport())]
    second = [r.external_id for r in iter_source(tmp_path, SourceReport())]
    assert first == second
    assert derive_external_id("x", "y") != derive_external_id("x", None)


def test_csv_manifest_with_relative_paths_metadata_and_bad_rows(tmp_path):
    _png(tmp_path / "imgs" / "1.png")
    (tmp_path / "m.csv").write_text(
        "id,image,text,split\n"
        "one,imgs/1.png,a red square,train\n"
        "two,,only text,test\n"
        "three,imgs/missing.png,gone,test\n"
        "four,,,test\n"
    )
    report = SourceReport()
    records = list(iter_source(tmp_path / "m.csv", report))
    assert [r.external_id for r in records] == ["one", "two"]
    assert records[0].image_path == str((tmp_path / "imgs" / "1.png").resolve())
    assert records[0].metadata == {"split": "train"}
    assert records[1].image_path is None and records[1].text == "only text"
    assert report.skipped == {"image file missing": 1, "row has neither image nor text": 1}


def test_jsonl_manifest_skips_malformed_lines(tmp_path):
    _png(tmp_path / "1.png")
    lines = [json.dumps({"image": "1.png", "text": "x", "tags": ["a"]}), "{not json", "[1, 2]", ""]
    (tmp_path / "m.jsonl").write_text("\n".join(lines))
    report = SourceReport()
    records = list(iter_source(tmp_path / "m.jsonl", report))
    assert len(records) == 1 and records[0].metadata == {"tags": ["a"]}
    assert report.skipped == {"malformed JSON line": 2}


def test_parquet_manifest(tmp_path):
    _png(tmp_path / "1.png")
    table = pa.table({"image": ["1.png", None], "text": ["cap", "just text"], "score": [0.5, None]})
    pq.write_table(table, tmp_path / "m.parquet")
    records = list(iter_source(tmp_path / "m.parquet", SourceReport()))
    assert [r.text for r in records] == ["cap", "just text"]
    assert records[0].metadata == {"score": 0.5} and records[1].metadata == {"score": None}


def test_unusable_sources_raise_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder or manifest"):
        iter_source(tmp_path / "nope", SourceReport())
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="neither a folder nor a manifest"):
        iter_source(tmp_path / "x.txt", SourceReport())


def test_a_captions_column_gives_each_record_its_captions(tmp_path):
    _png(tmp_path / "1.png")
    (tmp_path / "m.csv").write_text(
        'image,text,captions\n1.png,a red square,"[""a red square"", "" a crimson box "", """"]"\n'
        "1.png,no list,not json\n1.png,numbers,[1]\n1.png,none,\n"
    )
    records = list(iter_source(tmp_path / "m.csv", SourceReport()))
    assert [r.captions for r in records] == [("a red square", "a crimson box"), (), (), ()]
    assert records[0].metadata["captions"] == '["a red square", " a crimson box ", ""]'  # kept, as any column
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"image": "1.png", "text": "x", "captions": ["x", "y"], "exif": {"iso": 100, "tags": ["a"]}})
    )
    record = next(iter_source(tmp_path / "m.jsonl", SourceReport()))
    assert record.captions == ("x", "y")
    # lists and objects stay JSON in the item's metadata (not their Python repr as a string)
    assert record.metadata["captions"] == ["x", "y"] and record.metadata["exif"] == {"iso": 100, "tags": ["a"]}
    pq.write_table(pa.table({"image": ["1.png"], "text": ["x"], "captions": [["x", "z"]]}), tmp_path / "m.parquet")
    record = next(iter_source(tmp_path / "m.parquet", SourceReport()))
    assert record.captions == ("x", "z") and record.metadata["captions"] == ["x", "z"]
