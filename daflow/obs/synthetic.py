"""Synthetic observations from a nature run: y = H(x_true) + e, e ~ N(0, error_std^2).

A fraction of the horizontal grid points is observed on every level (the same points on every
level, as the EnSF-SQG experiments do). ``pattern="fixed"`` draws the points once, ``"random"``
draws them anew at each observed time; ``every=K`` observes every K-th time. The random stream is
``numpy.random.default_rng(seed)``: the same truth and seed give the same bytes.
The result follows the observation contract (DESIGN.md): one dimension ``obs``; ``value``,
``error_std``, ``time``, location (``lat``/``lon`` values, or grid indices ``y``/``x`` or ``i``,
plus ``level``), ``variable``, ``operator`` and ``qc`` (0 = good).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from daflow.errors import DataError
from daflow.core.grid import horizontal_dims
from daflow.obs.operators import apply_operator, get_operator
from daflow.seeding import resolve_seed

PATTERNS = ("fixed", "random")


def observe(
    truth: xr.Dataset,
    fraction: float,
    error_std: float,
    seed: int | None = None,
    pattern: str = "fixed",
    operator: str = "identity",
    every: int = 1,
    variables: Sequence[str] = (),
    source: str = "truth",
) -> xr.Dataset:
    """Draw synthetic observations of ``truth`` (a state without ``member``)."""
    if not 0 < fraction <= 1:
        raise DataError(source, f"--fraction {fraction} must be in (0, 1]")
    if not error_std > 0:
        raise DataError(source, f"--error-std {error_std} must be positive")
    if pattern not in PATTERNS or every < 1:
        raise DataError(source, "--pattern must be fixed or random and --every >= 1")
    get_operator(operator)
    names = list(variables) or [n for n, v in truth.data_vars.items() if "time" in v.dims and horizontal_dims(v.dims)]
    if not names:
        raise DataError(source, "no gridded variable with a time dimension to observe")
    seed = resolve_seed(seed)
    rng = np.random.default_rng(seed)
    times = truth["time"].values[::every]
    parts = [_observe_variable(truth, n, times, fraction, error_std, pattern, operator, every, rng, source)
             for n in names]
    obs = xr.concat(parts, dim="obs")
    obs.attrs = {
        "title": "synthetic observations",
        "source": source,
        "observation_pattern": pattern,
        "observed_fraction": fraction,
        "observe_every": every,
        "seed": seed,
    }
    return obs


def _observe_variable(truth, name, times, fraction, error_std, pattern, operator, every, rng, source):
    if name not in truth.data_vars:
        raise DataError(source, f"no variable {name}")
    field = truth[name]
    if "member" in field.dims:
        raise DataError(source, f"{name} is an ensemble; observe a single truth (select one with --sel member=K)")
    hdims = horizontal_dims(field.dims)
    if "time" not in field.dims or not hdims:
        raise DataError(source, f"{name} has no time and horizontal grid to observe")
    field = field.transpose("time", *(["level"] if "level" in field.dims else []), *hdims)
    nt, shape = len(times), tuple(field.sizes[d] for d in hdims)
    npoints = int(np.prod(shape))
    count = max(1, int(round(fraction * npoints)))
    if pattern == "fixed":
        chosen = np.tile(np.sort(rng.choice(npoints, count, replace=False)), (nt, 1))
    else:
        chosen = np.stack([np.sort(rng.choice(npoints, count, replace=False)) for _ in range(nt)])
    values = field.isel(time=slice(None, None, every)).values  # (time, [level,] *hdims)
    nlev = values.shape[1] if "level" in field.dims else 1
    flat = values.reshape(nt, nlev, npoints)
    picked = np.take_along_axis(flat, chosen[:, None, :], axis=2)  # (time, level, count)
    if not np.isfinite(picked).all():
        raise DataError(source, f"{name} has NaN or Inf at observed points")
    clean = apply_operator(operator, picked.astype(np.float64))
    value = clean + rng.normal(0.0, error_std, size=clean.shape)
    n = value.size
    data = {
        "value": ("obs", value.ravel(), {"long_name": f"observed {operator}({name})"}),
        "error_std": ("obs", np.full(n, float(error_std)), {"long_name": "observation error standard deviation"}),
        "time": ("obs", np.repeat(times, nlev * count), truth["time"].attrs),
        "variable": ("obs", np.full(n, name, dtype=object), {"long_name": "observed state variable"}),
        "operator": ("obs", np.full(n, operator, dtype=object), {"long_name": "observation operator H"}),
        "qc": ("obs", np.zeros(n, dtype=np.int8), {"long_name": "quality flag", "flag_values": np.int8(0), "flag_meanings": "good"}),
    }
    cells = np.broadcast_to(chosen[:, None, :], (nt, nlev, count)).ravel()
    index = np.unravel_index(cells, shape)
    for dim, idx in zip(hdims, index):
        if dim in ("lat", "lon"):
            data[dim] = ("obs", truth[dim].values[idx], truth[dim].attrs)
        else:
            data[dim] = ("obs", idx.astype(np.int32), {"long_name": f"grid index along {dim}"})
    if "level" in field.dims:
        levels = np.broadcast_to(field["level"].values[None, :, None], (nt, nlev, count)).ravel()
        data["level"] = ("obs", levels, field["level"].attrs)
    return xr.Dataset(data)
