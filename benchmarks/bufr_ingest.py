"""BUFR SYNOP ingest: daflow's reader beside pdbufr reading the same columns, same run.

The file is the 1,507-report SYNOP sample repeated ten times (15,070 single-report messages,
ECMWF BUFR edition 3). Each method runs in a fresh process; the decode is timed inside it (imports
excluded, they are the same ecCodes for both) and the process's peak resident memory is reported.
Repeats alternate the methods so that load on a shared machine hits both alike; the median is kept.

    .venv/bin/python benchmarks/bufr_ingest.py [--quick] [--copies 10] [--json FILE]

Methods: ``daflow-1`` and ``daflow`` = :func:`daflow.io.bufr.read_bufr` with one process and with
two forked worker processes, ``daflow-contract`` = the whole ``open_source`` (reader, observation
dataset, error table, qc) in one process; ``pdbufr`` = ``pdbufr.read_bufr`` of station id,
position, height, time, 2 m temperature and dewpoint, 10 m wind, mean-sea-level and station pressure.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]
from daflow.settings import sample_data_dir  # noqa: E402

RUN = """
import resource, sys, time
method, path = sys.argv[1], sys.argv[2]
if method == "pdbufr":
    import pdbufr
    cols = ("WMO_station_id", "latitude", "longitude", "heightOfStation", "data_datetime", "airTemperatureAt2M",
            "dewpointTemperatureAt2M", "windDirectionAt10M", "windSpeedAt10M", "pressureReducedToMeanSeaLevel",
            "nonCoordinatePressure")
    start = time.perf_counter()
    n = len(pdbufr.read_bufr(path, columns=cols, required_columns=("WMO_station_id",)))
elif method == "daflow-contract":
    import xarray as xr
    from daflow.io.ingest import open_source
    xr.Dataset({"warm": ("obs", [0.0])})  # xarray imports its array backends on first use: an import, not work
    start = time.perf_counter()
    n = open_source(path).sizes["obs"] // 6
else:
    from daflow.io.bufr import read_bufr
    start = time.perf_counter()
    n = len(read_bufr(path, workers=1 if method == "daflow-1" else 2)["value"]) // 6
seconds = time.perf_counter() - start
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, n)
"""
METHODS = ("daflow-1", "daflow-2", "daflow-contract", "pdbufr")


def run(method: str, path: str) -> tuple[float, float, int]:
    out = subprocess.run([sys.executable, "-c", RUN, method, path], check=True, capture_output=True, text=True)
    seconds, peak, n = out.stdout.split()
    return float(seconds), float(peak), int(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one copy of the file and one repeat")
    parser.add_argument("--copies", type=int, default=10, help="times the 1,507-report file is repeated [10]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures as one JSON object")
    args = parser.parse_args()
    source = sample_data_dir() / "obs" / "synop-2018112012-europe.bufr"
    if not source.is_file():
        sys.exit(f"skipped: {source} is absent (set DAFLOW_SAMPLE_DATA)")
    copies, repeats = (1, 1) if args.quick else (args.copies, args.repeats)
    results: dict[str, list] = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory() as work:
        path = f"{work}/synop.bufr"
        Path(path).write_bytes(source.read_bytes() * copies)
        for _ in range(repeats):
            for method in METHODS:
                results[method].append(run(method, path))
    figures = {"reports": 1507 * copies, "repeats": repeats}
    print(f"{'method':<18}{'reports':>9}{'seconds':>10}{'peak MiB':>10}")
    for method, runs in results.items():
        seconds, peak, n = statistics.median(r[0] for r in runs), max(r[1] for r in runs), runs[0][2]
        figures[method] = {"seconds": seconds, "peak_mib": peak, "reports": n}
        print(f"{method:<18}{n:>9}{seconds:>10.2f}{peak:>10.0f}")
    for method in ("daflow-1", "daflow-2", "daflow-contract"):
        figures[f"speedup_{method}_over_pdbufr"] = figures["pdbufr"]["seconds"] / figures[method]["seconds"]
        print(f"pdbufr / {method}: {figures[f'speedup_{method}_over_pdbufr']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
