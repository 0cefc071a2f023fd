"""Progress of long work, reported the same way to a terminal (tqdm bars) and to a job's row.

A reporter is called as ``progress(stage, done, total, unit=...)``; ``JobContext.progress`` is
one (and raises when the job is cancelled, which is how long loops stop promptly), and
:class:`Bars` is the command line's.
"""

from __future__ import annotations

from typing import Protocol

from tqdm.auto import tqdm


class Reporter(Protocol):
    def __call__(self, stage: str, done: int, total: int | None = None, *, unit: str = "items") -> None: ...


class Bars:
    """One tqdm bar per stage, closed when the next stage starts (or on exit)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.stage: str | None = None

    def __call__(self, stage: str, done: int, total: int | None = None, *, unit: str = "items") -> None:
        if stage != self.stage:
            self.close()
            self.bar = tqdm(desc=stage, unit=unit, disable=not self.enabled, dynamic_ncols=True)
            self.stage = stage
        assert self.bar is not None
        self.bar.total = total or None
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.stage = None, None

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def quiet(stage: str, done: int, total: int | None = None, *, unit: str = "items") -> None:
    """A reporter that reports nothing."""
