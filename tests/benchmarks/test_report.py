"""benchmarks._report.record: a rerun replaces its section of docs/benchmarks.md in place."""

from __future__ import annotations

import json

import pytest

from benchmarks import _report

DOC = """# Benchmarks

Intro.

<!-- search:begin -->
## Search latency

old table 1.19x
<!-- search:end -->

## Fine-tuning quality, binding world

Lead-in written by hand.

<!-- quality-binding-seeds-x:begin -->
### Fine-tuning quality over seeds

old seeds table
<!-- quality-binding-seeds-x:end -->

Verdict written by hand.

<!-- quality-binding-seeds-x-more:begin -->
### Another run of the same script

kept table
<!-- quality-binding-seeds-x-more:end -->
"""


@pytest.fixture
def doc(tmp_path, monkeypatch):
    path = tmp_path / "docs" / "benchmarks.md"
    path.parent.mkdir()
    path.write_text(DOC)
    monkeypatch.setattr(_report, "DOC", path)
    monkeypatch.setattr(_report, "ROOT", tmp_path)  # results JSON under tmp, not the repo
    return path


def test_rerun_replaces_the_section_and_does_not_append(doc, tmp_path):
    for ratio in ("1.25x", "1.21x"):  # twice: the second run must replace the first's output too
        _report.record("search", {"ratio": ratio}, f"## Search latency\n\nnew table {ratio}\n")
    text = doc.read_text()
    assert text.count("<!-- search:begin -->") == 1 and text.count("<!-- search:end -->") == 1
    assert "new table 1.21x" in text
    assert "old table" not in text and "1.25x" not in text
    # Everything around the section is untouched and in place.
    assert text.index("Intro.") < text.index("new table 1.21x") < text.index("## Fine-tuning quality")
    assert text.endswith("kept table\n<!-- quality-binding-seeds-x-more:end -->\n")
    assert json.loads((tmp_path / "benchmarks" / "results" / "search.json").read_text())["ratio"] == "1.21x"


def test_a_name_that_prefixes_another_replaces_only_its_own_block(doc):
    _report.record("quality-binding-seeds-x", {}, "## Fine-tuning quality over seeds\n\nnew seeds table\n")
    text = doc.read_text()
    assert "old seeds table" not in text and "new seeds table" in text
    assert "kept table" in text and "Verdict written by hand." in text
    assert text.count("<!-- quality-binding-seeds-x:begin -->") == 1


def test_a_nested_section_keeps_its_heading_level(doc):
    md = "## Fine-tuning quality over seeds\n\n```bash\n# a shell comment, not a heading\n```\n\nnew seeds table\n"
    _report.record("quality-binding-seeds-x", {}, md)
    text = doc.read_text()
    assert "### Fine-tuning quality over seeds\n" in text
    assert "\n## Fine-tuning quality over seeds" not in text
    assert "# a shell comment, not a heading" in text and "## a shell comment" not in text
    _report.record("search", {}, "## Search latency\n\nnew table\n")  # a top-level section stays top-level
    assert "\n## Search latency\n" in doc.read_text()


def test_a_new_name_is_appended_once(doc):
    _report.record("train", {}, "## Trainer throughput\n\n0.95x\n")
    _report.record("train", {}, "## Trainer throughput\n\n0.96x\n")
    text = doc.read_text()
    assert text.count("<!-- train:begin -->") == 1 and "0.95x" not in text
    assert text.rstrip().endswith("## Trainer throughput\n\n0.96x\n<!-- train:end -->")


def test_a_lone_marker_is_refused_rather_than_swallowing_the_text_after_it(doc):
    broken = DOC.replace("<!-- search:end -->", "", 1)
    doc.write_text(broken)
    with pytest.raises(ValueError, match="search:begin"):
        _report.record("search", {}, "## Search latency\n\nnew\n")
    assert doc.read_text() == broken


def test_a_new_name_goes_into_its_benchmarks_section_not_to_the_end(doc):
    # "search-http" is a new run of the search benchmark: it belongs after the search block and
    # before the next section, at the search block's level; a rerun keeps it there, once.
    for ratio in ("1.30x", "1.28x"):
        _report.record("search-http", {}, f"### Search latency over HTTP\n\nhttp {ratio}\n")
    text = doc.read_text()
    assert text.count("<!-- search-http:begin -->") == 1 and "1.30x" not in text
    assert "\n## Search latency over HTTP\n" in text  # the level of its relative, the search block
    block = text.index("<!-- search-http:begin -->")
    assert text.index("<!-- search:end -->") < block < text.index("## Fine-tuning quality, binding world")
    assert not text.rstrip().endswith("<!-- search-http:end -->")


def test_a_new_run_lands_after_its_closest_relative_and_the_text_that_follows_it(doc):
    _report.record("quality-binding-seeds-y", {}, "## Fine-tuning quality over seeds, world y\n\ny table\n")
    text = doc.read_text()
    # Closest relatives share "quality-binding-seeds": the last of them is -x-more, at the end.
    relative, new = "<!-- quality-binding-seeds-x-more:end -->", "<!-- quality-binding-seeds-y:begin -->"
    assert text.index(relative) < text.index(new)
    assert "### Fine-tuning quality over seeds, world y\n" in text
    assert text.index("Verdict written by hand.") < text.index("y table")


def test_one_shared_word_is_not_a_relative(doc):
    _report.record("quality-shapes", {}, "## Fine-tuning quality, shapes world\n\nshapes\n")
    text = doc.read_text()
    assert text.rstrip().endswith("shapes\n<!-- quality-shapes:end -->")
