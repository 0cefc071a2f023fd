"""Child processes that do not outlive their parent.

A job runs in a child of the worker, and a fine-tune under torchrun in ranks that torch's launcher
starts in sessions of their own: a SIGKILL of the worker (or the launcher) would leave them running,
and a resumed attempt would then train beside its own ghost. Linux can send a signal to a process
when its parent dies; everything we start asks for SIGKILL.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a no-op on other systems)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def die_with(pid: int, poll_seconds: float = 1.0) -> None:
    """SIGKILL this process when process ``pid`` exits (or at once when it is gone already): for a
    process whose parent is not the one it must not outlive (a job's process forked by the worker's
    fork server). A daemon thread waits on a pidfd (Linux 5.3+), or polls every ``poll_seconds``."""

    def kill_self() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        kill_self()
    except (AttributeError, OSError):  # not Linux, or a kernel before 5.3
        fd = None

    def wait() -> None:
        if fd is not None:
            select.select([fd], [], [])
        else:
            while _alive(pid):
                time.sleep(poll_seconds)
        kill_self()

    threading.Thread(target=wait, name=f"die-with-{pid}", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
