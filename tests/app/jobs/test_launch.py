"""The fork server: readied once per process, not once per poll of an idle worker; it imports only what
the kinds a worker claims need."""

from __future__ import annotations

import pytest

from app.jobs import launch


def test_the_server_imports_the_handlers_of_the_claimed_kinds_and_their_libraries():
    every = launch.preload()
    assert every == launch.PRELOAD and every[0] == "app.jobs.child"
    assert {"app.jobs.handlers.finetune", "app.jobs.handlers.ingest", *launch.HANDLER_LIBRARIES} <= set(every)
    assert launch.preload(["finetune", "promote"]) == [
        "app.jobs.child",
        "app.jobs.handlers.finetune",
        "app.jobs.handlers.promote",
        *launch.HANDLER_LIBRARIES,
    ]
    assert launch.preload(["embed", "reindex"]) == [
        "app.jobs.child",
        "app.jobs.handlers.embed",
        *launch.HANDLER_LIBRARIES,
    ]
    assert launch.preload(["test-record"]) == ["app.jobs.child"]  # a plugin kind: its handler loads in the job


@pytest.mark.slow  # the fork server imports torch and every handler
def test_ready_starts_the_server_once_and_then_forks_nothing(monkeypatch):
    launch.ready("fork")

    def no_fork(*args, **kwargs):
        raise AssertionError("ready() forked again")

    monkeypatch.setattr(launch._context, "Process", no_fork)
    for _ in range(3):  # an idle worker asks before every claim
        launch.ready("fork")
    launch.ready("exec")  # exec mode needs no server
