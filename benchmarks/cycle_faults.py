"""kill -9 at random points of recipes/cycle.sh, then rerun: are the results those of a clean run?

Builds a small Lorenz-96 OSSE (truth, observations, 20-member ensemble), runs one cycle cleanly as
the reference, then for each trial starts the cycle, kills its whole process group with SIGKILL
after a random fraction of the clean run's duration, reruns it to completion and compares the
analysis, background and observation data with the reference, and looks for partial files.
The peer is the uninterrupted run itself.

    .venv/bin/python benchmarks/cycle_faults.py [--trials 20] [--quick] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parent.parent
DAFLOW = str(Path(sys.executable).with_name("daflow"))
CYCLE_TIME, STAMP = "2026-01-01T06:00Z", "2026010106"
PRODUCTS = ("background.nc", "obs.nc", "analysis.nc")


def daflow(*args) -> None:
    subprocess.run([DAFLOW, *map(str, args)], check=True, capture_output=True)


def prepare(base: Path) -> None:
    daflow("forecast", "--model", "lorenz96", "--param", "dim=40", "--init", "random", "--steps", "0",
           "--start", "2026-01-01T00:00Z", "--seed", "1", "-o", base / "x0.nc")
    daflow("forecast", "--init", base / "x0.nc", "--steps", "1", "-o", base / "truth.nc")
    (base / "incoming").mkdir()
    daflow("ingest", base / "truth.nc", "--observe", "--fraction", "1", "--error-std", "1", "--seed", "2",
           "--time", f"{CYCLE_TIME}/{CYCLE_TIME}", "-o", base / "incoming" / f"{STAMP}.nc")
    daflow("forecast", "--init", base / "x0.nc", "--members", "20", "--perturb", "1", "--seed", "3", "-o", base / "init.nc")


def cycle(base: Path, work: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "WORK": str(work), "DAFLOW": DAFLOW, "OBS_DIR": str(base / "incoming")}
    return subprocess.Popen(["bash", str(ROOT / "recipes" / "cycle.sh"), CYCLE_TIME], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)


def new_work(base: Path, name: str) -> Path:
    work = base / name
    work.mkdir()
    (work / "init.nc").symlink_to(base / "init.nc")
    return work


def wait_until_gone(group: int) -> None:
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def difference(got: xr.Dataset, expected: xr.Dataset) -> str:
    """Where two products differ: variables and their largest absolute difference."""
    parts = []
    for name in expected.variables:
        a, b = got[name].values, expected[name].values
        if a.shape != b.shape:
            parts.append(f"{name} shape {a.shape} vs {b.shape}")
        elif not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
            parts.append(f"{name} max |diff| {np.nanmax(np.abs(a - b)) if a.dtype.kind == 'f' else 'n/a'}")
    return "; ".join(parts)


def data(work: Path) -> dict[str, xr.Dataset]:
    return {p: xr.open_dataset(work / STAMP / p).drop_attrs().load() for p in PRODUCTS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 trials")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    trials = 5 if args.quick else args.trials
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        prepare(base)
        reference = new_work(base, "reference")
        started = time.monotonic()
        if cycle(base, reference).wait() != 0:
            sys.exit(f"the clean cycle failed: see {reference}/log")
        clean_seconds = time.monotonic() - started
        expected = data(reference)
        identical, partial, killed_at = 0, 0, []
        for trial in range(trials):
            work = new_work(base, f"trial{trial}")
            proc = cycle(base, work, start_new_session=True)
            delay = rng.uniform(0.0, 1.0) * clean_seconds
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            wait_until_gone(proc.pid)  # as after a crash: no process of the killed run is left
            killed_at.append(round(delay / clean_seconds, 3))
            rerun = cycle(base, work)
            if rerun.wait() != 0:
                print(f"trial {trial}: the rerun failed (exit {rerun.returncode})")
                continue
            got = data(work)
            same = all(got[p].identical(expected[p]) for p in PRODUCTS)
            for p in PRODUCTS:
                if not got[p].identical(expected[p]):
                    print(f"trial {trial}: {p} differs: {difference(got[p], expected[p])}")
            leftovers = list((work / STAMP).glob(".*.tmp")) + list(work.glob("*.tmp"))
            identical += same
            partial += len(leftovers)
            print(f"trial {trial:2d}: killed at {delay / clean_seconds:4.0%} of a clean run; "
                  f"{'identical' if same else 'DIFFERENT'}; partial files {len(leftovers)}")
    figures = {"trials": trials, "identical": identical, "partial_files": partial,
               "clean_cycle_seconds": clean_seconds, "kill_points_fraction": killed_at}
    print(f"{identical}/{trials} reruns identical to the uninterrupted cycle; {partial} partial files left; "
          f"clean cycle {clean_seconds:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    sys.exit(0 if identical == trials and partial == 0 else 1)


if __name__ == "__main__":
    main()
