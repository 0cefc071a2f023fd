"""The pinned npm packages the emoji dataset is made from: fetched with ``npm pack``, checked, cached.

Why npm: the emoji sets are published there (``emoji-datasource*``, MIT code; the Apple and
Facebook drawings are not licensed for redistribution), so the project fetches them on the
user's machine and never commits them. Why pinned with a recorded ``sha512`` integrity (the
value ``npm view NAME@VERSION dist.integrity`` prints): the splits and every figure quoted on
them must be rebuilt from exactly the same bytes, and a tarball that changed under the same
version, or a truncated download, is refused rather than silently giving other data.

Tarballs are cached (``$XDG_CACHE_HOME/crossmodal/npm``, else ``~/.cache/crossmodal/npm``); a
cached tarball that verifies is used as it is, so a warm cache never runs npm and works offline.
Members are read straight out of the gzipped tarballs; nothing else is unpacked.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

NPM_TIMEOUT_S = 900  # npm retries a dead registry for minutes before it gives up on its own
# npm's error codes for a registry it cannot reach.
UNREACHABLE_CODES = frozenset({"ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ENETUNREACH"})


@dataclass(frozen=True)
class Package:
    """One pinned npm package: ``integrity`` is npm's ``sha512-<base64>`` of the tarball."""

    name: str
    version: str
    integrity: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def filename(self) -> str:
        """The name ``npm pack`` gives the tarball (unscoped packages only, which is all we pin)."""
        return f"{self.name}-{self.version}.tgz"


DATA = Package(
    "emoji-datasource",
    "16.0.0",
    "sha512-/qHKqK5Nr3+8zhgO6kHmF43Fm5C8HNn0AaFRIpgw8HF3+uF0Vfc8jgLI1ZQS5ba1vBzksS8NBCjHejwLb2D/Sg==",
)
# CLDR 47 is the newest release for Emoji 16.0 (CLDR 48 moves on to Emoji 17's names).
CLDR = Package(
    "cldr-annotations-full",
    "47.0.0",
    "sha512-kN3w6S5lu07gVsHod0St7WmfAxSruGsqZssBwu7Jcj5VbqgS2L3PeSFlPE1LwVX7ycBuCipsAiLpuoOxFRrVBQ==",
)
CLDR_DERIVED = Package(
    "cldr-annotations-derived-full",
    "47.0.0",
    "sha512-4DFjfdmPlZZTcVeOVTbWqe6bKTd3U+3q+KtpkzAR3awTexZ6nwNRRbadKCgNinT54XP1h4KV+Ws5Vm6R5Uvxgw==",
)
HOUSES: dict[str, Package] = {
    "apple": Package(
        "emoji-datasource-apple",
        "16.0.0",
        "sha512-dVYjsK0FnCry9F+PBtnivhG2K0xdwlmqYaSgiUtztUdAGPYiHYhZcVKvNBqC791g2qyEcFNTBO6utg4eQ3uLTw==",
    ),
    "google": Package(
        "emoji-datasource-google",
        "16.0.0",
        "sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A==",
    ),
    "twitter": Package(
        "emoji-datasource-twitter",
        "16.0.0",
        "sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ==",
    ),
    "facebook": Package(
        "emoji-datasource-facebook",
        "16.0.0",
        "sha512-b9ZxJdB7nMWGckH1vyCjPSosaa6MJYuojPPFiQ0LmDIZS8vlG454XKcmTFKrXIMAA72O4MRJMYFhvWI8pjyciQ==",
    ),
}


@dataclass(frozen=True)
class Sources:
    """Every package a build reads: the emoji table, CLDR's names and keywords, one set per house."""

    data: Package = DATA
    cldr: Package = CLDR
    cldr_derived: Package = CLDR_DERIVED
    houses: tuple[tuple[str, Package], ...] = tuple(HOUSES.items())

    def all(self) -> list[Package]:
        return [self.data, self.cldr, self.cldr_derived, *(p for _, p in self.houses)]


class EmojiFetchError(RuntimeError):
    """The packages could not be had; the message names what is missing or wrong, and the packages."""


class NpmNotFound(EmojiFetchError):
    pass


class RegistryUnreachable(EmojiFetchError):
    pass


class ChecksumMismatch(EmojiFetchError):
    pass


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/crossmodal/npm``, else ``~/.cache/crossmodal/npm``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "crossmodal" / "npm"


def integrity_of(path: Path) -> str:
    """npm's integrity string for a file: ``sha512-`` and the base64 of its SHA-512 digest."""
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def fetch_packages(
    packages: Sequence[Package],
    cache_dir: Path | None = None,
    npm: str = "npm",
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[Package, Path]:
    """The verified tarball of each package, fetched with ``npm pack`` only where the cache lacks it.

    A cached tarball that fails its checksum is fetched again; a fetched one that fails is
    discarded and :class:`ChecksumMismatch` raised. Raises :class:`NpmNotFound` without ``npm`` on
    PATH and :class:`RegistryUnreachable` when npm cannot reach its registry.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    found = {p: cache / p.filename for p in packages if _verified(cache / p.filename, p)}
    missing = [p for p in packages if p not in found]
    if missing:
        _npm_pack(missing, cache, npm)
        found |= {p: cache / p.filename for p in missing}
    if progress:
        progress("fetch packages", len(packages), len(packages))
    return {p: found[p] for p in packages}


def _verified(path: Path, package: Package) -> bool:
    return path.is_file() and integrity_of(path) == package.integrity


def _npm_pack(packages: Sequence[Package], cache: Path, npm: str) -> None:
    """``npm pack`` into a scratch folder beside the cache, check each tarball there, then move it
    in: the cache never holds half a download or an unchecked tarball under its final name."""
    specs = [p.spec for p in packages]
    exe = shutil.which(npm)
    if exe is None:
        raise NpmNotFound(
            f"`{npm}` is not on PATH; it is needed to fetch {', '.join(specs)} "
            f"(install Node.js and npm, or copy the tarballs into {cache})"
        )
    with tempfile.TemporaryDirectory(dir=cache, prefix=".pack-") as scratch:
        cmd = [exe, "pack", *specs, "--pack-destination", scratch, "--loglevel=error"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as e:
            raise RegistryUnreachable(
                f"npm did not answer within {NPM_TIMEOUT_S} s fetching {', '.join(specs)}: is the registry reachable?"
            ) from e
        if done.returncode != 0:
            raise _npm_error(done.stderr, specs)
        for p in packages:
            fetched = Path(scratch) / p.filename
            if not fetched.is_file():
                raise EmojiFetchError(f"npm pack gave no {p.filename} for {p.spec} in {scratch}")
            got = integrity_of(fetched)
            if got != p.integrity:
                raise ChecksumMismatch(
                    f"{p.spec} from the npm registry does not match its recorded checksum "
                    f"(expected {p.integrity}, got {got}); the tarball was discarded"
                )
            os.replace(fetched, cache / p.filename)


def _npm_error(stderr: str, specs: Sequence[str]) -> EmojiFetchError:
    """npm's error as one line: its code (``ECONNREFUSED``, ``E404``...) and its first message."""
    lines = [re.sub(r"^npm (error|ERR!)\s*", "", line).strip() for line in stderr.splitlines()]
    code = next((line.split()[1] for line in lines if line.startswith("code ") and len(line.split()) > 1), "")
    skip = ("code ", "syscall ", "errno ", "at ", "A complete log")
    message = next((line for line in lines if line and not line.startswith(skip)), "no output from npm")
    detail = f"{code}: {message}" if code else message
    if code in UNREACHABLE_CODES or "network" in message.lower():
        return RegistryUnreachable(f"the npm registry is unreachable ({detail}); cannot fetch {', '.join(specs)}")
    return EmojiFetchError(f"npm pack failed for {', '.join(specs)} ({detail})")


def read_member(tarball: Path, member: str) -> bytes:
    """One file out of a gzipped tarball (npm puts everything under ``package/``)."""
    with tarfile.open(tarball, "r:gz") as tar:
        for info in tar:
            if info.name == member and info.isfile():
                f = tar.extractfile(info)
                assert f is not None
                return f.read()
    raise FileNotFoundError(f"{member} is not in {tarball.name}")


def iter_members(tarball: Path, wanted: Iterable[str]) -> Iterable[tuple[str, bytes]]:
    """``(name, bytes)`` of each wanted member, in tarball order, in one streaming pass."""
    wanted = set(wanted)
    with tarfile.open(tarball, "r:gz") as tar:
        for info in tar:
            if info.name in wanted and info.isfile():
                f = tar.extractfile(info)
                assert f is not None
                yield info.name, f.read()
