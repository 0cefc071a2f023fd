"""Progress of long work, reported the same way to a terminal, to a log and to a job's row.

A reporter is called as ``progress(stage, done, total, unit=...)``; ``JobContext.progress`` is
one (and raises when the job is cancelled, which is how long loops stop promptly), and
:class:`Bars` is the command line's.

On a terminal :class:`Bars` draws one tqdm bar per stage, closed before the next stage opens, so
no nested bars are left behind. Where tqdm turns itself off because its stream is not a terminal
(``disable=None``: a log file, a container's output, a pipe), it writes one plain line per stage
every few seconds instead, formatted by tqdm (count, rate, ETA), with no cursor-control characters.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO

from tqdm.auto import tqdm

# What a plain line says: tqdm's own fields, without the bar and the carriage returns that draw it.
PLAIN_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}]"
PLAIN_FORMAT_NO_TOTAL = "{desc}: {n_fmt} {unit} [{elapsed}, {rate_fmt}]"


class Reporter(Protocol):
    def __call__(self, stage: str, done: int, total: int | None = None, *, unit: str = "items") -> None: ...


class Bars:
    """One tqdm bar per stage on a terminal, a plain line per stage every ``every`` seconds elsewhere."""

    def __init__(self, enabled: bool = True, every: float = 5.0, file: TextIO | None = None):
        self.enabled, self.every = enabled, every
        self.file = file
        self.bar: tqdm | None = None
        self.stage: str | None = None
        self.plain = False
        self.done, self.unit = 0, "items"
        self.total: int | None = None
        self.message: str | None = None
        self.started = self.written = 0.0

    def __call__(
        self, stage: str, done: int, total: int | None = None, *, unit: str = "items", message: str | None = None
    ) -> None:
        """Report ``done`` of ``total``; ``message`` (say, a loss) follows the count."""
        if stage != self.stage:
            self.close()
            self.stage, self.unit = stage, unit
            # disable=None: tqdm decides, and turns itself off where its stream is not a terminal
            self.bar = tqdm(
                desc=stage,
                unit=unit,
                total=total or None,
                disable=None if self.enabled else True,
                dynamic_ncols=True,
                file=self._stream(),
            )
            self.plain = self.enabled and bool(self.bar.disable)
            self.started = self.written = time.monotonic()
        assert self.bar is not None
        self.done, self.total, self.message = done, total or None, message
        if self.plain:
            if time.monotonic() - self.written >= self.every:
                self._line()
        else:
            self.bar.total = self.total
            if message:
                self.bar.set_postfix_str(message, refresh=False)
            self.bar.update(done - self.bar.n)

    def _stream(self) -> TextIO:
        return self.file if self.file is not None else sys.stderr

    def _line(self) -> None:
        fmt = PLAIN_FORMAT if self.total else PLAIN_FORMAT_NO_TOTAL
        meter: Any = tqdm.format_meter(
            self.done, self.total, time.monotonic() - self.started, prefix=self.stage, unit=self.unit, bar_format=fmt
        )
        stream = self._stream()
        stream.write(f"{meter}, {self.message}\n" if self.message else f"{meter}\n")
        stream.flush()
        self.written = time.monotonic()

    def close(self) -> None:
        if self.bar is not None:
            if self.plain:
                self._line()  # where the stage ended
            self.bar.close()
        self.bar, self.stage, self.plain = None, None, False

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def quiet(stage: str, done: int, total: int | None = None, *, unit: str = "items") -> None:
    """A reporter that reports nothing."""
