"""Verification of a state against observations (no truth): observation-minus-forecast statistics.

For every good report (qc = 0, finite value) whose variable and time the state holds, the forecast
equivalent H(x) is interpolated horizontally (:mod:`daflow.obs.interpolation`: bilinear on a
lat/lon grid, inverse-distance on a point grid; reports outside a regional grid are left out) and, for a state
with pressure levels (hPa), linearly in log-pressure between the two levels around the report.
The departure is d = y - H(x); per group (platform, variable and, for upper air, pressure band)
count N, bias = mean(d), RMSE = sqrt(mean(d^2)) and standard deviation sqrt(RMSE^2 - bias^2),
as in the observation monitoring of NWP centres. An ensemble is verified by its mean.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import xarray as xr

from daflow.core.grid import geographic_points
from daflow.errors import DataError
from daflow.obs.interpolation import interpolator_for

BANDS_HPA = (1100.0, 700.0, 300.0, 100.0, 0.0)


def _band(p_pa: np.ndarray) -> np.ndarray:
    out = np.full(len(p_pa), "", dtype=object)
    hpa = p_pa / 100.0
    for hi, lo in zip(BANDS_HPA[:-1], BANDS_HPA[1:]):
        out[(hpa <= hi) & (hpa > lo)] = f"{lo:g}-{hi:g} hPa"
    return out


def departures(state: xr.Dataset, obs: xr.Dataset, names: tuple[str, str] = ("forecast", "obs")) -> pd.DataFrame:
    """One row per verified report: station, platform, variable, band, lat, lon, value, hx, departure."""
    state_name, obs_name = names
    qc = obs["qc"].values if "qc" in obs else np.zeros(obs.sizes["obs"], np.int8)
    variable = obs["variable"].values.astype(str)
    value = obs["value"].values.astype(np.float64)
    good = (qc == 0) & np.isfinite(value)
    pressure = obs["pressure"].values.astype(np.float64) if "pressure" in obs else np.full(len(value), np.nan)
    rows = []
    for var in np.unique(variable[good]):
        if var not in state.data_vars:
            continue
        field = state[var].mean("member") if "member" in state[var].dims else state[var]
        geographic_points(field, state_name, "interpolating to reports")  # a clear error when the field has no geographic grid
        h = interpolator_for(field)
        sel = good & (variable == var)
        times = obs["time"].values
        frames = field["time"].values if "time" in field.dims else [None]
        for when in frames:
            at = np.flatnonzero(sel & (times == when)) if when is not None else np.flatnonzero(sel)
            if not at.size:
                continue
            frame = field.sel(time=when) if when is not None else field
            index, w, _ = h.weights(obs["lat"].values[at], obs["lon"].values[at])
            if "level" in frame.dims:
                hx = _log_pressure(frame, index, w, pressure[at], state_name)
            else:
                flat = np.ravel(frame.transpose(*[d for d in frame.dims if d != "level"]).values).astype(np.float64)
                hx = (flat[index] * w).sum(1)
            rows.append(pd.DataFrame({
                "station": obs["station"].values[at].astype(str) if "station" in obs else "",
                "platform": obs["platform"].values[at].astype(str) if "platform" in obs else "all",
                "variable": var, "band": _band(pressure[at]), "time": times[at],
                "lat": obs["lat"].values[at], "lon": obs["lon"].values[at], "pressure": pressure[at],
                "value": value[at], "hx": hx, "departure": value[at] - hx}))
    if not rows:
        raise DataError(obs_name, f"no good report of a variable and time that {state_name} holds "
                        f"({', '.join(map(str, state.data_vars))})")
    table = pd.concat(rows, ignore_index=True)
    return table[np.isfinite(table["departure"])]


def _log_pressure(frame: xr.DataArray, index, w, p_pa, source) -> np.ndarray:
    """Horizontal weights on each level, then linear in ln p between the levels around the report."""
    levels = frame["level"].values.astype(np.float64) * 100.0  # hPa -> Pa
    columns = frame.transpose("level", ...).values.reshape(len(levels), -1)
    profile = (columns[:, index] * w).sum(-1)                # (levels, p)
    order = np.argsort(levels)
    lnp, profile = np.log(levels[order]), profile[order]
    out = np.full(len(p_pa), np.nan)
    for j, p in enumerate(p_pa):
        if np.isfinite(p) and lnp[0] <= np.log(p) <= lnp[-1]:
            out[j] = np.interp(np.log(p), lnp, profile[:, j])
    return out


def _stats(d: np.ndarray) -> dict:
    n = len(d)
    bias = float(d.mean()) if n else None
    rmse = float(np.sqrt((d**2).mean())) if n else None
    return {"count": int(n), "bias": bias, "rmse": rmse,
            "std": float(np.sqrt(max(rmse**2 - bias**2, 0.0))) if n else None}


def summarise(table: pd.DataFrame) -> dict:
    """Top-level count/bias/rmse/std over all verified reports, per platform and per group."""
    out = _stats(table["departure"].to_numpy())
    out["platforms"] = {p: _stats(g["departure"].to_numpy()) for p, g in table.groupby("platform")}
    out["groups"] = [{"platform": p, "variable": v, "band": b or "surface", **_stats(g["departure"].to_numpy())}
                     for (p, v, b), g in table.groupby(["platform", "variable", "band"])]
    return out


def print_summary(figures: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"observation minus state: {figures['count']} reports")
    for column in ("platform", "variable", "band", "count", "bias", "rmse", "std"):
        table.add_column(column, justify="right" if column in ("count", "bias", "rmse", "std") else "left")
    for g in figures["groups"]:
        table.add_row(g["platform"], g["variable"], g["band"], str(g["count"]), *(f"{g[k]:.4g}" for k in ("bias", "rmse", "std")))
    Console().print(table)


def write_departures_csv(table: pd.DataFrame, path: str | os.PathLike) -> None:
    from daflow.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")


def plot_departures(table: pd.DataFrame, path: str | os.PathLike, title: str = "O - F") -> None:
    """A map of the departures of the first variable (coloured dots, symmetric colour scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from daflow.io.atomic import atomic_path

    var = table["variable"].iloc[0]
    t = table[table["variable"] == var]
    lim = float(np.nanpercentile(np.abs(t["departure"]), 98)) or 1.0
    fig, ax = plt.subplots(figsize=(8, 6))
    lon = (t["lon"].to_numpy() + 180) % 360 - 180
    sc = ax.scatter(lon, t["lat"], c=t["departure"], cmap="RdBu_r", vmin=-lim, vmax=lim, s=12, edgecolors="none")
    fig.colorbar(sc, ax=ax, label=f"{var} observation minus state")
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(f"{title}: {len(t)} {var} reports, bias {t['departure'].mean():+.2f}, rmse {np.sqrt((t['departure']**2).mean()):.2f}")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
