"""Child processes that do not outlive their parent.

A job runs in a child of the worker, and a fine-tune under torchrun in ranks that torch's launcher
starts in sessions of their own: a SIGKILL of the worker (or the launcher) would leave them running,
and a resumed attempt would then train beside its own ghost. Linux can send a signal to a process
when its parent dies; everything we start asks for SIGKILL.
"""

from __future__ import annotations

import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a no-op on other systems)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
