"""The suite's file order: longest recorded files first, the rest in collection order."""

from __future__ import annotations

from types import SimpleNamespace

from tests.helpers.durations import from_junit, longest_files_first


def test_files_go_longest_first_and_tests_keep_their_order_within_a_file():
    ids = ["a.py::t1", "b.py::t1", "a.py::t2", "c.py::t1", "d.py::t1", "b.py::t2"]
    items = [SimpleNamespace(nodeid=i) for i in ids]
    longest_files_first(items, {"b.py": 50.0, "c.py": 0.5, "d.py": 9.0})  # a.py unknown: 2 s
    assert [i.nodeid for i in items] == ["b.py::t1", "b.py::t2", "d.py::t1", "a.py::t1", "a.py::t2", "c.py::t1"]


def test_a_junit_report_gives_seconds_per_file(tmp_path):
    report = tmp_path / "junit.xml"
    report.write_text(
        "<testsuites><testsuite>"
        '<testcase classname="tests.app.test_x" name="a" time="1.5"/>'
        '<testcase classname="tests.app.test_x.TestGroup" name="b" time="2.0"/>'
        '<testcase classname="tests.test_y" name="c" time="4.25"/>'
        "</testsuite></testsuites>"
    )
    assert from_junit(report) == {"tests/test_y.py": 4.2, "tests/app/test_x.py": 3.5}
