"""Progress reads well everywhere: one tqdm bar per stage on a terminal, plain lines in a log."""

from __future__ import annotations

import io

from app.progress import Bars


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(stream, every: float) -> str:
    with Bars(every=every, file=stream) as bars:
        for done in range(0, 101, 10):
            bars("embed images", done, 100)
        bars("train", 3, 60, unit="steps", message="loss 0.4200")
        for done in range(0, 31, 10):
            bars("build index", done, None, unit="vectors")
    return stream.getvalue()


def test_a_log_gets_plain_lines_with_count_rate_and_eta_and_no_cursor_control():
    out = _run(io.StringIO(), every=0.0)
    assert "\r" not in out and "\x1b" not in out
    lines = out.splitlines()
    assert lines[-1].startswith("build index: 30 vectors [") and "vectors/s]" in lines[-1]
    ends = [line for line in lines if line.startswith("embed images: 100/100 items [")]
    assert ends and "<00:00" in ends[-1] and "items/s]" in ends[-1]  # count, ETA, rate
    assert any(line.startswith("train: 3/60 steps [") and line.endswith(", loss 0.4200") for line in lines)


def test_a_log_hears_from_a_stage_every_few_seconds_not_every_update():
    lines = _run(io.StringIO(), every=3600).splitlines()
    assert [line.split(":")[0] for line in lines] == ["embed images", "train", "build index"]  # each stage's end


def test_a_terminal_gets_one_bar_per_stage_closed_before_the_next():
    out = _run(Terminal(), every=0.0)
    assert "\x1b" not in out  # no cursor moves: never two bars open at once
    finished = out.split("\n")[:-1]  # a bar ends its line when it closes
    assert len(finished) == 3
    assert [chunk.rsplit("\r", 1)[-1].split(":")[0] for chunk in finished] == ["embed images", "train", "build index"]
    assert "100/100" in finished[0] and "loss 0.4200" in finished[1]
