"""Station CSV: ``station,lat,lon,elevation,time,variable,value[,error]``, one observation a row.

``time`` is ISO-8601 (a trailing Z means UTC), ``variable`` a state variable name (t2m, u10, ...)
in the state's units, ``error`` the observation error standard deviation (else the platform table's,
platform ``synop`` unless a ``platform`` column says otherwise).
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from daflow.errors import DataError

COLUMNS = ("station", "lat", "lon", "elevation", "time", "variable", "value")


def is_station_csv(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        head = f.readline(4096).decode("utf-8", "replace").strip().lower()
    return head.startswith("station,") or head.startswith("station;")


def read_station_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    try:
        df = pd.read_csv(path, sep=None, engine="python", dtype={"station": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(path, f"not a readable CSV file ({str(err).splitlines()[0]})") from None
    df.columns = [c.strip().lower() for c in df.columns]
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}[,error]")
    if len(df) == 0:
        raise DataError(path, "no observation row")
    try:
        stamps = pd.to_datetime(df["time"].astype(str).str.strip(), utc=True, format="ISO8601")
    except (ValueError, TypeError) as err:
        raise DataError(path, f"unparseable time ({str(err).splitlines()[0]})") from None
    numbers = {}
    for name in ("lat", "lon", "elevation", "value", "error"):
        if name in df.columns:
            values = pd.to_numeric(df[name], errors="coerce")
            bad = values.isna() & df[name].notna()
            if bad.any():
                raise DataError(path, f"row {int(np.flatnonzero(bad.to_numpy())[0]) + 2}: {name} {df[name][bad].iloc[0]!r} is not a number")
            numbers[name] = values.to_numpy(dtype=np.float64)
    out = {
        "station": df["station"].astype(str).str.strip().to_numpy(dtype=object),
        "platform": (df["platform"].astype(str).to_numpy(dtype=object) if "platform" in df.columns
                     else np.full(len(df), "synop", dtype=object)),
        "time": stamps.dt.tz_localize(None).to_numpy().astype("datetime64[ns]"),
        "variable": df["variable"].astype(str).str.strip().to_numpy(dtype=object),
        "pressure": np.full(len(df), np.nan),
        **{k: numbers[k] for k in ("lat", "lon", "elevation", "value")},
    }
    if "error" in numbers:
        out["error_std"] = numbers["error"]
    return out
