"""Streaming ingest of a large GRIB: peak memory follows the dask chunk, not the file.

Writes a GRIB file of SIZE GB with ecCodes (global 0.25 deg 2 m temperature, 721 x 1440, hourly
messages, 16-bit packing), then converts it to NetCDF twice in fresh processes:
``daflow ingest --chunks time=24`` and plain ``xr.open_dataset(engine="cfgrib").to_netcdf()``,
reporting wall time and peak resident memory of each.

    .venv/bin/python benchmarks/grib_streaming.py [--size-gb 2] [--quick] [--json FILE] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import PLAIN_GRIB_TO_NETCDF, measure_process  # noqa: E402

NLAT, NLON = 721, 1440


def write_grib(path: Path, size_gb: float) -> int:
    """Hourly messages from 2020-01-01 until the file holds size_gb; returns the message count."""
    import eccodes

    rng = np.random.default_rng(0)
    lat = np.linspace(90, -90, NLAT)[:, None]
    templates = []
    for k in range(6):
        field = 288 - 40 * np.sin(np.deg2rad(lat)) ** 2 + rng.normal(0, 2, (NLAT, NLON)) + k
        handle = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
        eccodes.codes_set_key_vals(handle, {
            "Ni": NLON, "Nj": NLAT, "latitudeOfFirstGridPointInDegrees": 90.0,
            "latitudeOfLastGridPointInDegrees": -90.0, "longitudeOfFirstGridPointInDegrees": 0.0,
            "longitudeOfLastGridPointInDegrees": 359.75, "iDirectionIncrementInDegrees": 0.25,
            "jDirectionIncrementInDegrees": 0.25, "shortName": "2t", "bitsPerValue": 16})
        eccodes.codes_set_values(handle, field.ravel())
        templates.append(handle)
    per_message = eccodes.codes_get_message_size(templates[0])
    count = max(1, int(size_gb * 1e9 // per_message))
    with open(path, "wb") as f:
        for n in range(count):
            clone = eccodes.codes_clone(templates[n % len(templates)])
            day, hour = divmod(n, 24)
            date = np.datetime64("2020-01-01") + np.timedelta64(day, "D")
            eccodes.codes_set_key_vals(clone, {"dataDate": int(str(date).replace("-", "")), "dataTime": hour * 100})
            eccodes.codes_write(clone, f)
            eccodes.codes_release(clone)
    for handle in templates:
        eccodes.codes_release(handle)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="a 0.25 GB file")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workdir", type=Path, help="where the GRIB and NetCDF files go (default: a temporary folder)")
    args = parser.parse_args()
    size = 0.25 if args.quick else args.size_gb
    daflow = str(Path(sys.executable).with_name("daflow"))
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        grib = Path(work) / "big.grib"
        started = time.perf_counter()
        messages = write_grib(grib, size)
        written = time.perf_counter() - started
        gb = grib.stat().st_size / 1e9
        ours = measure_process([daflow, "ingest", str(grib), "--chunks", "time=24", "--quiet", "-o", f"{work}/daflow.nc"])
        Path(f"{work}/daflow.nc").unlink()
        plain = measure_process([sys.executable, "-c", PLAIN_GRIB_TO_NETCDF, str(grib), f"{work}/plain.nc"])
    figures = {"grib_gb": gb, "messages": messages, "grib_write_seconds": written,
               "daflow_seconds": ours[0], "daflow_peak_mib": ours[1],
               "plain_seconds": plain[0], "plain_peak_mib": plain[1],
               "memory_ratio_daflow_over_plain": ours[1] / plain[1], "time_ratio_daflow_over_plain": ours[0] / plain[0]}
    print(f"GRIB file: {gb:.2f} GB, {messages} messages of {NLAT} x {NLON} (written in {written:.0f} s)")
    print(f"{'method':<40}{'seconds':>10}{'peak MiB':>10}")
    print(f"{'daflow ingest --chunks time=24':<40}{ours[0]:>10.1f}{ours[1]:>10.0f}")
    print(f"{'xr.open_dataset(cfgrib).to_netcdf()':<40}{plain[0]:>10.1f}{plain[1]:>10.0f}")
    print(f"ratio daflow/plain: memory {figures['memory_ratio_daflow_over_plain']:.2f}, time {figures['time_ratio_daflow_over_plain']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
