"""Wall time and peak memory of a command run in a fresh process (imports included, as a user sees it)."""
from __future__ import annotations

import subprocess
import sys

_WRAPPER = """
import resource, subprocess, sys, time
start = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""
# The plain peer of daflow ingest: xarray + cfgrib, the whole file at once.
PLAIN_GRIB_TO_NETCDF = """
import sys, xarray as xr
xr.open_dataset(sys.argv[1], engine="cfgrib", backend_kwargs={"indexpath": ""}).to_netcdf(sys.argv[2])
"""


def measure_process(command: list[str]) -> tuple[float, float]:
    """(seconds, peak resident MiB) of ``command`` run once in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *command], check=True, capture_output=True, text=True)
    seconds, peak_mib = map(float, out.stdout.split())
    return seconds, peak_mib
