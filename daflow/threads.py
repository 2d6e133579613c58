"""How many CPU threads torch uses: the policy, in one place (README, "Threads").

- ``OMP_WAIT_POLICY=PASSIVE`` (unless already set) before torch is imported, by every ``daflow``
  command (:func:`set_threads`; the CLI imports torch only inside commands): an OpenMP thread
  waiting for work sleeps instead of spinning, so threads that lose their core to another
  process do not burn the cores the others need.
- ``--threads N`` on every command sets N torch threads, and nothing below overrides it.
- Otherwise: the cores this process may run on (``os.sched_getaffinity``) minus the 1-minute load
  average, rounded, at least 1 (:func:`default_threads`); and a model integration or analysis of
  fewer than ``SMALL_WORK`` values runs on one thread (:func:`daflow.core.state.threads_for`):
  for a few hundred thousand values per operation, waking and synchronising threads costs more
  than the arithmetic, and far more when the cores are busy with other processes.
"""
from __future__ import annotations

import os
import sys

SMALL_WORK = 2**20
_explicit: int | None = None


def set_wait_policy() -> None:
    """Passive OpenMP waiting; only effective before torch is imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """Cores available minus the 1-minute load average (rounded), at least 1."""
    cores = available_cores()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(1, min(cores, round(cores - load)))


def set_threads(threads: int | None = None) -> int:
    """Apply ``threads`` (explicit, never overridden later) or the default; returns the count."""
    global _explicit
    set_wait_policy()
    _explicit = threads
    count = threads or default_threads()
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)
    else:  # read by torch's OpenMP runtime when it is imported
        os.environ["OMP_NUM_THREADS"] = str(count)
    return count


def explicit() -> int | None:
    """The thread count given with ``--threads``, or None."""
    return _explicit
