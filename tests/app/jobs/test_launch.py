"""The fork server: readied once per process, not once per poll of an idle worker."""

from __future__ import annotations

import pytest

from app.jobs import launch

pytestmark = pytest.mark.slow  # the fork server imports torch and every handler


def test_ready_starts_the_server_once_and_then_forks_nothing(monkeypatch):
    launch.ready("fork")

    def no_fork(*args, **kwargs):
        raise AssertionError("ready() forked again")

    monkeypatch.setattr(launch._context, "Process", no_fork)
    for _ in range(3):  # an idle worker asks before every claim
        launch.ready("fork")
    launch.ready("exec")  # exec mode needs no server
