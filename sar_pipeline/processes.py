"""Child processes that never outlive their parent (training, fine-tuning).

A training child started by ``sar-pipeline run`` or a Dagster run worker must stop when that
process dies, however it dies (SIGKILL included): an orphaned trainer keeps the GPU, writes
checkpoints nobody records, and a re-run would train beside it. Two mechanisms, both used:
:func:`die_with_parent` as the ``preexec_fn`` of the child (Linux ``PR_SET_PDEATHSIG``: the
kernel sends SIGTERM to the child when its parent dies) and :func:`watch_parent` inside the
child's own program (a watchdog thread that notices re-parenting, for a launcher's workers and
for systems without the prctl).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(parent_pid: int | None = None) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: on Linux the kernel sends SIGTERM to the child
    when the process that started it dies (even by SIGKILL), so a training child never outlives
    a killed ``sar-pipeline run`` or run worker; a child whose parent is already gone exits.

    The C function is looked up here, before the fork, so the child only calls it.
    """
    prctl = _prctl()
    parent = parent_pid or os.getpid()

    def tie() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)

    return tie


def start_child(command: Sequence[str], env: dict[str, str]) -> subprocess.Popen:
    """Start a training (or fine-tuning) child that dies with this process (:func:`die_with_parent`)."""
    return subprocess.Popen(list(command), env=env, preexec_fn=die_with_parent())


def watch_parent(interval_s: float = 1.0) -> threading.Thread:
    """In a child: stop this process (SIGTERM) when the process that started it goes away.

    The kernel's parent-death signal covers Linux for the direct child; this watchdog covers the
    rest (a launcher's workers, other systems): once the parent is gone the process is re-parented,
    so ``os.getppid()`` changes.
    """
    parent = os.getppid()
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                print(f"parent process {parent} is gone: stopping", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=watch, name="parent-watchdog", daemon=True)
    thread.start()
    return thread
