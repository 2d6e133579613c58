"""Memory a request will take, checked before anything is allocated.

A request that cannot fit (``--steps 10**12``, ``--members 10**9``, ``--param dim=10**12``) is
refused at once with the figure, needed against available, instead of failing inside an
allocation (or swapping the machine to a halt) minutes later. The estimates count the arrays
that certainly exist at the same time (kept frames, the ensemble and the model's working
copies, the model's operators), so they are lower bounds: a request refused here could not run.
"""
from __future__ import annotations

import math
from pathlib import Path

from daflow.errors import OptionError

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def available_bytes() -> int:
    """Memory this process can still take: the system's available memory, capped by a cgroup (container, SLURM) limit."""
    import psutil

    available = int(psutil.virtual_memory().available)
    try:
        limit, used = (Path("/sys/fs/cgroup", name).read_text().strip() for name in ("memory.max", "memory.current"))
        if limit != "max":
            available = min(available, int(limit) - int(used))
    except (OSError, ValueError):
        pass
    return max(available, 0)


def human(nbytes: float) -> str:
    """1536 -> '1.5 KiB' (powers of 1024)."""
    power = min(int(math.log(max(nbytes, 1), 1024)), len(UNITS) - 1)
    return f"{nbytes / 1024**power:.3g} {UNITS[power]}"


def check_fits(needed: int, option: str, what: str) -> None:
    """OptionError naming ``option`` (the request's largest factor) when ``needed`` bytes exceed what is available.

    ``what`` describes the request, e.g. "1000000000001 frames x 10 members x 40 values of 8 bytes".
    """
    available = available_bytes()
    if needed > available:
        raise OptionError(option, f"{what} need {human(needed)} of memory; {human(available)} is available")
