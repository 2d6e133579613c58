"""Climate-index text files: CSV (``date,value``) and the KNMI Climate Explorer layouts.

KNMI files start with ``#`` header lines, the last of which reads ``# NAME [UNITS] long name``;
data rows are either ``decimal-year value`` or ``year v1 ... v12`` (one column per month).
Missing values are the sentinels NOAA and KNMI use (-99.99, -999.9, -999, -9999), plus any
``missing value X`` declared in the header. The result is a ``state`` dataset with a monthly
``time`` (first day of each month) when the rows are monthly.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from daflow.errors import DataError

SENTINELS = (-99.99, -999.9, -999.0, -9999.0)
_KNMI_NAME = re.compile(r"^#\s*(\S+)\s*\[([^\]]*)\]\s*(.*)$")
_MISSING = re.compile(r"missing value\s*[:=]?\s*(-?\d+(?:\.\d*)?)", re.IGNORECASE)


def variable_name(text: str) -> str:
    """A NetCDF-safe name: 'Nino3.4' -> 'Nino34', 'SOI from CRU ...' -> 'SOI'."""
    words = text.strip().split()
    name = re.sub(r"\W", "", words[0]) if words else ""
    return name if name and not name[0].isdigit() else f"v{name}"


def open_index_text(path: str | os.PathLike) -> xr.Dataset:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(path, f"cannot read ({err.strerror})") from err
    if _binary(raw[:65536]):
        raise DataError(path, "binary content: not a GRIB, NetCDF, BUFR, ODB-2 or text file")
    text = raw.decode("utf-8", errors="replace")
    comments = [ln for ln in text.splitlines() if ln.lstrip().startswith("#")]
    rows = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not rows:
        raise DataError(path, "no data rows (not GRIB, NetCDF or a climate-index text file)")
    sentinels = list(SENTINELS) + [float(m) for m in _MISSING.findall(text)]
    attrs: dict[str, str] = {}
    names: list[str] = []
    meta = next((m for m in map(_KNMI_NAME.match, reversed(comments)) if m), None)
    if meta:
        names, attrs = [variable_name(meta.group(1))], {"units": meta.group(2), "long_name": meta.group(3)}
    if "," in rows[0]:
        times, values, header = _parse_csv(path, rows)
        names = names or [variable_name(h) for h in header]
    else:
        times, values = _parse_columns(path, rows)
    if not names or len(names) != values.shape[1]:
        names = [variable_name(path.stem)] if values.shape[1] == 1 else [f"v{i}" for i in range(values.shape[1])]
    values[np.isin(np.round(values, 4), np.round(sentinels, 4))] = np.nan
    order = np.argsort(times.values, kind="stable")
    times = times[order]
    if not times.is_unique:
        raise DataError(path, f"time {times[times.duplicated()][0]:%Y-%m} appears twice")
    ds = xr.Dataset(
        {n: ("time", values[order, j], dict(attrs)) for j, n in enumerate(names)},
        coords={"time": ("time", times, {"standard_name": "time"})},
        attrs={"source": f"climate index file {path.name}"},
    )
    return ds


def _parse_csv(path: Path, rows: list[str]) -> tuple[pd.DatetimeIndex, np.ndarray, list[str]]:
    table = [r for r in csv.reader(io.StringIO("\n".join(rows))) if r and r[0].strip()]
    header: list[str] = []
    if table and _date_or_none(table[0][0]) is None:
        header, table = [h.strip() for h in table[0][1:]], table[1:]
    dates, values = [], []
    for row in table:
        date = _date_or_none(row[0])
        if date is None:
            raise DataError(path, f"cannot read the date {row[0]!r}")
        dates.append(date)
        values.append([_number(path, v) for v in row[1:]])
    if not values or len({len(v) for v in values}) != 1 or not values[0]:
        raise DataError(path, "CSV rows need a date and the same number of values")
    return pd.DatetimeIndex(dates), np.array(values, dtype=float), header


def _parse_columns(path: Path, rows: list[str]) -> tuple[pd.DatetimeIndex, np.ndarray]:
    table = [[_number(path, v) for v in r.split()] for r in rows]
    width = {len(r) for r in table}
    if width == {13}:  # year + 12 monthly values
        dates = [pd.Timestamp(int(r[0]), m, 1) for r in table for m in range(1, 13)]
        return pd.DatetimeIndex(dates), np.array([v for r in table for v in r[1:]])[:, None]
    if len(width) == 1 and min(width) >= 2:  # decimal year, value(s)
        return pd.DatetimeIndex([_decimal_year(r[0]) for r in table]), np.array([r[1:] for r in table])
    raise DataError(path, "rows are neither 'decimal-year value' nor 'year' + 12 monthly values")


def _binary(head: bytes) -> bool:
    """NUL bytes, or more than 1 in 100 characters that are neither text nor whitespace (any 8-bit text encoding passes)."""
    if b"\0" in head:
        return True
    control = sum(head.count(bytes([c])) for c in range(32) if c not in (9, 10, 12, 13))
    return control > len(head) / 100


def _decimal_year(value: float) -> pd.Timestamp:
    """The month holding a decimal year: 1854.0 and 1854.0417 (mid-January) are January."""
    year = math.floor(value + 1e-9)
    month = min(int(math.floor((value - year) * 12 + 0.01)), 11) + 1
    return pd.Timestamp(year, month, 1)


def _date_or_none(text: str) -> pd.Timestamp | None:
    try:
        return pd.Timestamp(text.strip())
    except (ValueError, TypeError):
        return None


def _number(path: Path, text: str) -> float:
    text = text.strip()
    if not text:
        return float("nan")
    try:
        return float(text)
    except ValueError:
        raise DataError(path, f"{text!r} is not a number") from None
