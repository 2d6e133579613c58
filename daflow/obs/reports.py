"""Real reports (BUFR, ODB, station CSV) -> the observation contract, with errors and qc.

Readers return columns (``station``, ``platform``, ``time``, ``lat``, ``lon``, ``elevation``,
``pressure``, ``variable``, ``value`` and optionally ``error_std`` and departures); this module
turns them into an ``observations`` dataset: ``operator`` = identity, the observation error of each
row from a per-platform, per-variable table (:data:`DEFAULT_ERRORS`, overridable by a TOML file
with one table per platform, e.g. ``[synop]`` ``t2m = 1.2``), and ``qc`` flags for implausible
values (|lat| > 90, |lon| > 360, temperature or pressure not positive) and blacklisted stations
(:mod:`daflow.obs.qc` adds missing values, duplicates and the time window).

The default errors are the observation error standard deviations of ECMWF's surface (screen-level)
OI and of its 4D-Var conventional-observation table, rounded (IFS Documentation CY47R1, Part I,
Ch. 2 and Part II, Ch. 9): SYNOP 2 m temperature 1 K and dewpoint 1.5 K, 10 m wind 2 m/s, pressure
1 hPa; radiosonde temperature 1 K, wind 2 m/s, geopotential 100 m^2/s^2 (about 10 m),
humidity 1 g/kg; aircraft temperature 1 K and wind 2.5 m/s.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

import numpy as np
import xarray as xr

from daflow.errors import DataError
from daflow.seeding import resolve_seed

DEFAULT_ERRORS: dict[str, dict[str, float]] = {
    "synop": {"t2m": 1.0, "d2m": 1.5, "u10": 2.0, "v10": 2.0, "msl": 100.0, "sp": 100.0, "rh2m": 0.1},
    "ship": {"t2m": 1.0, "d2m": 1.5, "u10": 2.0, "v10": 2.0, "msl": 100.0, "sp": 100.0},
    "temp": {"t": 1.0, "u": 2.0, "v": 2.0, "z": 100.0, "q": 1e-3},
    "aircraft": {"t": 1.0, "u": 2.5, "v": 2.5, "q": 1e-3},
}
UNITS = {"t2m": "K", "d2m": "K", "t": "K", "u10": "m s-1", "v10": "m s-1", "u": "m s-1", "v": "m s-1",
         "msl": "Pa", "sp": "Pa", "z": "m2 s-2", "q": "kg kg-1", "rh2m": "1"}
QC_IMPLAUSIBLE, QC_BLACKLISTED = 4, 5
TEMPERATURES = ("t2m", "d2m", "t")
PRESSURES = ("msl", "sp")


def error_table(path: str | os.PathLike | None = None) -> dict[str, dict[str, float]]:
    """The default table, updated from a TOML file (``[platform]`` tables of ``variable = std``)."""
    table = {p: dict(v) for p, v in DEFAULT_ERRORS.items()}
    if path is None:
        return table
    try:
        with open(path, "rb") as f:
            given = tomllib.load(f)
    except FileNotFoundError:
        from daflow.errors import InputMissing

        raise InputMissing(path, "no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise DataError(path, f"not valid TOML ({err})") from None
    for platform, errors in given.items():
        if not isinstance(errors, dict):
            raise DataError(path, f"{platform} = ...: expected a table [{platform}] of variable = error std")
        for variable, std in errors.items():
            if not isinstance(std, (int, float)) or not std > 0:
                raise DataError(path, f"[{platform}] {variable} = {std!r}: an error std must be a positive number")
            table.setdefault(platform, {})[variable] = float(std)
    return table


def read_blacklist(path: str | os.PathLike) -> set[str]:
    """Station identifiers, one per line; ``#`` starts a comment."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        from daflow.errors import InputMissing

        raise InputMissing(path, "no such file") from None
    except UnicodeDecodeError:
        raise DataError(path, "a blacklist is a text file of station identifiers") from None
    return {line.split("#", 1)[0].strip() for line in text.splitlines()} - {""}


def to_dataset(columns: dict[str, np.ndarray], source, errors: dict[str, dict[str, float]] | None = None,
               blacklist: set[str] | None = None) -> xr.Dataset:
    """The observation dataset of reader ``columns`` (see the module docstring)."""
    errors = errors or error_table()
    n = len(columns["value"])
    if n == 0:
        raise DataError(source, "no observation in the file")
    platform = columns["platform"].astype(str)
    variable = columns["variable"].astype(str)
    value = columns["value"].astype(np.float64)
    lat, lon = columns["lat"].astype(np.float64), columns["lon"].astype(np.float64)
    std = columns.get("error_std")
    std = np.full(n, np.nan) if std is None else std.astype(np.float64)
    table_std = np.full(n, np.nan)
    for (p, v) in {(p, v) for p, v in zip(platform, variable)}:
        if v in errors.get(p, {}):
            table_std[(platform == p) & (variable == v)] = errors[p][v]
    std = np.where(np.isfinite(std) & (std > 0), std, table_std)
    qc = np.zeros(n, np.int8)
    with np.errstate(invalid="ignore"):
        implausible = (np.abs(lat) > 90 + 1e-6) | (np.abs(lon) > 360 + 1e-6)
        implausible |= np.isin(variable, TEMPERATURES + PRESSURES) & (value <= 0)
    qc[implausible & np.isfinite(value)] = QC_IMPLAUSIBLE
    station = columns["station"].astype(str)
    if blacklist:
        known = blacklist & set(np.unique(station))
        if not known:
            raise DataError(source, f"the blacklist names no station of this file ({', '.join(sorted(blacklist)[:3])}...)")
        qc[np.isin(station, list(known)) & (qc == 0)] = QC_BLACKLISTED
    ds = xr.Dataset(
        {
            "value": ("obs", value, {"long_name": "observed value (units of the variable, see units_of)"}),
            "error_std": ("obs", std, {"long_name": "observation error standard deviation"}),
            "time": ("obs", columns["time"].astype("datetime64[ns]"), {"standard_name": "time"}),
            "lat": ("obs", lat, {"standard_name": "latitude", "units": "degrees_north"}),
            "lon": ("obs", lon, {"standard_name": "longitude", "units": "degrees_east"}),
            "elevation": ("obs", columns["elevation"].astype(np.float64),
                          {"long_name": "station elevation or flight altitude", "units": "m"}),
            "variable": ("obs", variable.astype(object), {"long_name": "observed state variable"}),
            "operator": ("obs", np.full(n, "identity", dtype=object)),
            "station": ("obs", station.astype(object), {"long_name": "station or platform identifier"}),
            "platform": ("obs", platform.astype(object), {"long_name": "report type"}),
            "qc": ("obs", qc, {"long_name": "quality flag"}),
        },
        attrs={"daflow_kind": "observations", "source": f"reports of {Path(str(source)).name}",
               "observation_units": "; ".join(f"{v}: {UNITS.get(v, '?')}" for v in np.unique(variable))},
    )
    pressure = columns.get("pressure")
    if pressure is not None and np.isfinite(pressure.astype(np.float64)).any():
        ds["pressure"] = ("obs", pressure.astype(np.float64), {"standard_name": "air_pressure", "units": "Pa"})
    for extra in ("fg_depar", "an_depar", "vertical_coordinate"):
        if extra in columns:
            ds[extra] = ("obs", columns[extra].astype(np.float64))
    return ds


def withhold_stations(obs: xr.Dataset, fraction: float, seed: int | None, source=None) -> tuple[xr.Dataset, xr.Dataset]:
    """(assimilated, withheld): a random ``fraction`` of the stations (all their reports) held back."""
    if obs.attrs.get("daflow_kind") != "observations" and "station" not in obs:
        raise DataError(source, "--withhold splits observation files by station; this input has no station")
    station = obs["station"].values.astype(str)
    names = np.unique(station)
    count = int(round(fraction * len(names)))
    if count == 0 or count == len(names):
        raise DataError(source, f"--withhold {fraction} of {len(names)} station(s) leaves one side empty")
    held = np.random.default_rng(resolve_seed(seed)).choice(names, count, replace=False)
    mask = np.isin(station, held)
    return obs.isel(obs=np.flatnonzero(~mask)), obs.isel(obs=np.flatnonzero(mask))
