"""Child processes that die with the daemon: no orphan survives a kill -9 of its parent.

A worker of a ``ProcessPoolExecutor`` notices its parent's death only when it next reads its call queue;
an idle worker blocked there after the parent was killed with SIGKILL stays blocked forever (the issue
counted 60 orphans holding 2.6 GiB after 20 kills). Two mechanisms, both set up by :func:`die_with_parent`
as the pool's ``initializer``:

* Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, so the kernel kills the worker the moment the thread that
  spawned it exits (the pool spawns from the event loop's thread, which lives as long as the daemon);
* everywhere: a daemon thread that compares ``os.getppid()`` with the daemon's pid every
  ``poll_s`` seconds and ``os._exit``\\ s when it changed (re-parented to init or a subreaper), which also
  covers the race of a parent dying before the prctl call.

multiprocessing's resource_tracker is a child of the daemon too; it exits when the last holder of its pipe
closes it, i.e. once the daemon and every worker are gone, after unlinking what they leaked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent (thread) exits. Linux only; returns
    whether it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """Pool initializer: this process ends when ``parent_pid`` does (see the module docstring)."""
    set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the prctl: nothing would signal us
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="siem-parent-watch", daemon=True).start()
