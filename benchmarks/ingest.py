"""Ingest of the 744-frame ERA5 t2m GRIB: ``daflow ingest`` beside plain xarray + cfgrib.

Each method runs in a fresh process (imports included, as a user sees it); we report the median
wall time and the peak resident memory of that process over the repeats.

    .venv/bin/python benchmarks/ingest.py [--quick] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
from daflow.settings import sample_data_dir  # noqa: E402
from measure import PLAIN_GRIB_TO_NETCDF, measure_process  # noqa: E402

def measure(command: list[str], repeats: int) -> tuple[float, float]:
    """Median seconds and largest peak MiB over ``repeats`` fresh processes."""
    runs = [measure_process(command) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat instead of five")
    parser.add_argument("--json", type=Path, help="write the figures as one JSON object")
    args = parser.parse_args()
    source = sample_data_dir() / "grib" / "era5-2mt-2019-03-uk.grib"
    if not source.is_file():
        sys.exit(f"skipped: {source} is absent (set DAFLOW_SAMPLE_DATA)")
    daflow = str(Path(sys.executable).with_name("daflow"))
    repeats = 1 if args.quick else 5
    with tempfile.TemporaryDirectory() as work:
        ours = measure([daflow, "ingest", str(source), "-o", f"{work}/daflow.nc", "--quiet"], repeats)
        plain = measure([sys.executable, "-c", PLAIN_GRIB_TO_NETCDF, str(source), f"{work}/plain.nc"], repeats)
    figures = {
        "file": source.name, "repeats": repeats,
        "daflow_seconds": ours[0], "daflow_peak_mib": ours[1],
        "plain_seconds": plain[0], "plain_peak_mib": plain[1],
        "time_ratio_daflow_over_plain": ours[0] / plain[0],
        "memory_ratio_daflow_over_plain": ours[1] / plain[1],
    }
    print(f"{'method':<34}{'seconds':>10}{'peak MiB':>10}")
    print(f"{'daflow ingest (CLI, dask chunks)':<34}{ours[0]:>10.2f}{ours[1]:>10.0f}")
    print(f"{'xr.open_dataset(cfgrib).to_netcdf':<34}{plain[0]:>10.2f}{plain[1]:>10.0f}")
    print(f"ratio daflow/plain: time {figures['time_ratio_daflow_over_plain']:.2f}, memory {figures['memory_ratio_daflow_over_plain']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
