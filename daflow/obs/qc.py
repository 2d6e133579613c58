"""Quality control of observation files: flag, never drop, so that the flags travel with the data.

qc = 0 good; 1 missing (NaN or non-positive value / error_std); 2 duplicate (same time, variable,
location and level as an earlier observation); 3 outside the time window. An observation already
flagged keeps its first flag. Filters assimilate only qc = 0. Readers of real reports add 4 implausible
(impossible coordinates or values) and 5 blacklisted station (:mod:`daflow.obs.reports`); the
background check of a surface analysis adds 6 (|O-B| too large, :mod:`daflow.da.surface`).
"""
from __future__ import annotations

import numpy as np
import xarray as xr

QC_GOOD, QC_MISSING, QC_DUPLICATE, QC_OUT_OF_WINDOW = 0, 1, 2, 3
QC_BACKGROUND = 6  # |O-B| too large: the surface analysis and every ensemble method (daflow.da.base)
QC_MEANINGS = "good missing duplicate outside_time_window implausible blacklisted background_check"
LOCATION = ("lat", "lon", "y", "x", "i", "level", "pressure")


def quality_control(obs: xr.Dataset, window: tuple[object, object] | None = None) -> tuple[xr.Dataset, dict[str, int]]:
    """Return ``obs`` with ``qc`` updated, and the number of observations given each new flag."""
    n = obs.sizes["obs"]
    qc = obs["qc"].values.astype(np.int8) if "qc" in obs else np.zeros(n, np.int8)
    value, error = obs["value"].values, obs["error_std"].values
    missing = ~np.isfinite(value) | ~np.isfinite(error) | ~(error > 0)
    key_columns = [obs["time"].values.astype("int64") if obs["time"].dtype.kind == "M" else obs["time"].values,
                   obs["variable"].values.astype(str)] + [_keyed(obs[c].values) for c in LOCATION if c in obs]
    keys = np.rec.fromarrays(key_columns)
    _, first = np.unique(keys, return_index=True)
    duplicate = np.ones(n, bool)
    duplicate[first] = False
    outside = np.zeros(n, bool)
    if window is not None:
        start, end = window
        times = obs["time"].values
        if start is not None:
            outside |= times < np.asarray(start, dtype=times.dtype)
        if end is not None:
            outside |= times > np.asarray(end, dtype=times.dtype)
    counts = {}
    for flag, name, hit in ((QC_MISSING, "missing", missing), (QC_DUPLICATE, "duplicate", duplicate),
                            (QC_OUT_OF_WINDOW, "outside the time window", outside)):
        new = hit & (qc == QC_GOOD)
        qc[new] = flag
        counts[name] = int(new.sum())
    out = obs.copy()
    out["qc"] = ("obs", qc, {"long_name": "quality flag", "flag_values": np.arange(7, dtype=np.int8),
                             "flag_meanings": QC_MEANINGS})
    return out, counts


def _keyed(values: np.ndarray) -> np.ndarray:
    """NaN (no pressure for a surface report) compares equal to NaN when looking for duplicates."""
    return np.nan_to_num(values, nan=-9e99) if values.dtype.kind == "f" else values
