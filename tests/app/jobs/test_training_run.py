"""A fine-tune's series (the curves /admin draws): thinned to a bounded size, the latest step always kept,
every evaluation kept, a resumed run's repeated steps replacing the old ones."""

from __future__ import annotations

from app.jobs.training_run import MAX_POINTS, add_point, new_series, series_from


def _entry(step: int, **extra) -> dict:
    return {"step": step, "total": 10_000, "loss": 1.0 / step, "lr": 1e-3 * step, **extra}


def test_series_keeps_every_step_while_short_and_every_evaluation():
    series = new_series()
    for step in range(1, 21):
        add_point(series, _entry(step, **({"val": {"step": step, "t2i_R@1": step / 100}} if step % 5 == 0 else {})))
    assert [row[0] for row in series["train"]] == list(range(1, 21))
    assert series["train"][3] == [4, 0.25, 0.004]
    assert [v["step"] for v in series["val"]] == [5, 10, 15, 20] and series["val"][-1]["t2i_R@1"] == 0.2


def test_a_long_run_is_thinned_evenly_and_ends_at_its_last_step():
    series = new_series()
    steps = 5 * MAX_POINTS + 7
    for step in range(1, steps + 1):
        add_point(series, _entry(step))
        assert len(series["train"]) <= MAX_POINTS
        assert series["train"][-1][0] == step  # the curve always reaches "now"
    xs = [row[0] for row in series["train"]]
    assert len(xs) > MAX_POINTS // 2 and xs[0] == 1
    gaps = {b - a for a, b in zip(xs[:-2], xs[1:-1], strict=True)}
    assert len(gaps) == 1  # one stride between kept points (the last may be closer)


def test_a_resumed_run_replaces_the_steps_it_repeats():
    series = new_series()
    for step in range(1, 11):
        add_point(series, _entry(step, **({"val": {"step": step, "t2i_R@1": 0.1}} if step in (4, 8) else {})))
    add_point(series, _entry(7, loss=9.0))  # resumed from the checkpoint at step 6
    assert [row[0] for row in series["train"]] == [1, 2, 3, 4, 5, 6, 7] and series["train"][-1][1] == 9.0
    assert [v["step"] for v in series["val"]] == [4]


def test_series_from_a_whole_run_matches_the_live_one():
    history = [{"step": s, "loss": 2.0 / s, "lr": 0.01} for s in range(1, 9)]
    evals = [{"step": 4, "t2i_R@1": 0.5}, {"step": 8, "t2i_R@1": 0.75}]
    live = new_series()
    for entry in history:
        add_point(
            live,
            {**entry, **({"val": e} if (e := next((v for v in evals if v["step"] == entry["step"]), None)) else {})},
        )
    assert series_from(history, evals) == live
    assert series_from(history, evals)["val"] == evals
