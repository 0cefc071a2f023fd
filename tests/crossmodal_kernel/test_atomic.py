"""Publication: a reader sees the old content or the new one, never half; nothing is left behind."""

from __future__ import annotations

import os

import pytest

from crossmodal_kernel import atomic


def test_write_replaces_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "report.json"
    atomic.write_text(target, "one")
    atomic.write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_a_failed_write_keeps_the_old_content(tmp_path):
    target = tmp_path / "state.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_file_and_folder_are_synced_before_and_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real = atomic.fsync_path
    monkeypatch.setattr(atomic, "fsync_path", lambda p: (synced.append(p), real(p)))
    target = tmp_path / "x.bin"
    atomic.write_bytes(target, b"data")
    assert synced[0].name.startswith(".x.bin.tmp-") and synced[1] == tmp_path


def test_temporary_names_are_hidden_and_unique(tmp_path):
    names = {atomic.temp_sibling(tmp_path / "a").name for _ in range(100)}
    assert len(names) == 100 and all(n.startswith(".a.tmp-") for n in names)


def test_a_folder_appears_whole_and_is_never_overwritten(tmp_path):
    out = tmp_path / "indexes" / "7"
    with atomic.atomic_dir(out) as tmp:
        (tmp / "index.faiss").write_bytes(b"x")
        assert not out.exists()  # invisible until complete
    assert sorted(p.name for p in out.iterdir()) == ["index.faiss"]
    assert [p.name for p in out.parent.iterdir()] == ["7"]
    with pytest.raises(FileExistsError):
        with atomic.atomic_dir(out):
            pass


def test_a_failed_folder_leaves_nothing(tmp_path):
    out = tmp_path / "model"
    with pytest.raises(OSError), atomic.atomic_dir(out) as tmp:
        (tmp / "weights.pt").write_bytes(b"partial")
        raise OSError(28, os.strerror(28))  # ENOSPC
    assert list(tmp_path.iterdir()) == []
