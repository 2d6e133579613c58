"""``daflow score``: verify a forecast or analysis (ensemble or single) against a truth.

For each variable and each common time t, with normalised area weights w (cos(latitude) on
geographic grids, uniform otherwise), ensemble mean m, members x_1..x_M and truth y:
    RMSE(t)   = sqrt(sum w (m - y)^2)            bias(t) = sum w (m - y)
    spread(t) = sqrt(sum w var_M-1(x))          CRPS(t) = sum w CRPS(x, y)   (standard and fair)
    ACC(t)    = sum w a_m a_y / sqrt(sum w a_m^2 sum w a_y^2),  a = field - climatology,
with the climatology the truth's time mean after burn-in. Time-averaged figures are the means of
these over the times after ``burn_in`` (as DAPPER averages its instantaneous RMSE), and
spread/skill = mean spread / mean RMSE. With a fixed-pattern observation file the RMSE is also
split into observed and unobserved grid points. A NaN or Inf in the truth or in any member is a
:class:`DataError` naming the variable and the first time, unless ``mask_nonfinite``: then the points
where the truth or any member is not finite are left out of every metric alike (weights, CRPS,
ranks, climatology; spectra of such times are skipped), and their number is reported.
The files are read in blocks of time, scored as dask tasks (in parallel on the local cores, or on
a dask.distributed cluster when one is active), so that memory stays bounded.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import dask
import numpy as np
import xarray as xr

from daflow.errors import DaflowWarning, DataError
from daflow.core.grid import horizontal_dims
from daflow.io.contract import unknown_dims
from daflow.score.metrics import crps_ensemble, rank_histogram, truth_rank
from daflow.score.spectra import spectrum

PER_TIME = ("rmse", "bias", "spread", "crps", "crps_fair", "acc", "rmse_observed", "rmse_unobserved")
BLOCK_BYTES = 64 * 2**20


def _nothing_to_score(truth: xr.Dataset, truth_name: str, forecast_name: str) -> DataError:
    """The error when no variable can be scored: name a truth variable without a time axis (e.g. a
    monthly climatology along ``month``) and the selection that makes it a state."""
    timeless = [n for n, v in truth.data_vars.items() if "time" not in v.dims and v.ndim >= 2]
    if not timeless:
        return DataError(forecast_name, f"shares no gridded variable with {truth_name}")
    dims = truth[timeless[0]].dims
    unknown = unknown_dims(dims)
    hint = f"; select one {unknown[0]} with daflow ingest --sel {unknown[0]}=VALUE" if unknown else ""
    return DataError(truth_name, f"{timeless[0]} has no time dimension (its dimensions: {', '.join(map(str, dims))}), "
                                 f"so nothing can be scored{hint}")


def verify(
    truth: xr.Dataset,
    forecast: xr.Dataset,
    obs: xr.Dataset | None = None,
    burn_in: int = 0,
    variables: Sequence[str] = (),
    names: tuple[str, str, str] = ("truth", "forecast", "obs"),
    mask_nonfinite: bool = False,
) -> xr.Dataset:
    """Return the ``scores`` dataset (per time, time-averaged, rank histograms, spectra)."""
    truth_name, forecast_name, obs_name = names
    chosen = list(variables) or [
        n for n, v in truth.data_vars.items()
        if "time" in v.dims and "obs" not in v.dims and n in forecast.data_vars
    ]
    if not chosen:
        raise _nothing_to_score(truth, truth_name, forecast_name)
    times = _common_times(truth, forecast, names)
    if burn_in >= len(times):
        raise DataError(forecast_name, f"--burn-in {burn_in} leaves none of the {len(times)} common times")
    parts = [_verify_variable(truth, forecast, obs, v, times, burn_in, names, mask_nonfinite) for v in chosen]
    scores = xr.concat(parts, dim="variable", coords="minimal", compat="override", join="outer")
    scores = scores.assign_coords(variable=("variable", np.array(chosen, dtype=object)))
    units = [str(p["rmse"].attrs.get("units", "1")) for p in parts]  # the units of each variable's RMSE, bias, spread
    scores = scores.assign_coords(units=("variable", np.array(units, dtype=object), {"long_name": "units of the variable's scores"}))
    if len(set(units)) > 1:  # one attribute cannot hold them: the per-variable coordinate does
        for name in scores.data_vars:
            scores[name].attrs.pop("units", None)
    for metric in PER_TIME:
        if metric in scores:
            after = scores[metric].isel(time=slice(burn_in, None))
            scores[f"{metric}_time_mean"] = after.mean("time", skipna=False)
            scores[f"{metric}_time_mean"].attrs = {**scores[metric].attrs, "cell_methods": f"time: mean (after {burn_in} burn-in times)"}
    if "spread_time_mean" in scores:
        scores["spread_skill"] = scores["spread_time_mean"] / scores["rmse_time_mean"]
        scores["spread_skill"].attrs = {"long_name": "ensemble spread / RMSE of the ensemble mean (time means)"}
    scores.attrs = {"title": f"verification of {forecast_name} against {truth_name}", "truth": truth_name,
                    "forecast": forecast_name, "burn_in": burn_in,
                    "members": int(forecast.sizes.get("member", 1))}
    if mask_nonfinite:
        scores.attrs["nonfinite_masked"] = int(sum(p.attrs["nonfinite_masked"] for p in parts))
    if obs is not None:
        scores.attrs["observations"] = obs_name
    return scores


def summary(scores: xr.Dataset) -> dict:
    """The time-averaged figures as a JSON-ready dict (flat keys when one variable is scored)."""
    per_variable = {}
    for i, name in enumerate(scores["variable"].values):
        figures = {m: _number(scores[f"{m}_time_mean"][i]) if f"{m}_time_mean" in scores else None
                   for m in PER_TIME}  # the same keys always; null where undefined
        figures["spread_skill"] = _number(scores["spread_skill"][i]) if "spread_skill" in scores else None
        if "rank_histogram" in scores:
            figures["rank_histogram"] = [int(c) for c in scores["rank_histogram"][i].values]
        per_variable[str(name)] = figures
    out = {"n_times": int(scores.sizes["time"]), "burn_in": int(scores.attrs["burn_in"]),
           "members": int(scores.attrs["members"])}
    if "nonfinite_masked" in scores.attrs:
        out["nonfinite_masked"] = int(scores.attrs["nonfinite_masked"])
    if len(per_variable) == 1:
        out.update(next(iter(per_variable.values())))
    out["variables"] = per_variable
    return out


def _number(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _time_key(values: np.ndarray) -> np.ndarray:
    return values if values.dtype.kind == "M" else np.round(values.astype(float), 9)


def _common_times(truth, forecast, names) -> np.ndarray:
    for ds, name in zip((truth, forecast), names):
        if "time" not in ds.dims:
            raise DataError(name, "has no time dimension")
    common = np.intersect1d(_time_key(truth["time"].values), _time_key(forecast["time"].values))
    if common.size == 0:
        raise DataError(names[1], f"has no time in common with {names[0]}")
    return common


def _select_times(da: xr.DataArray, times: np.ndarray) -> xr.DataArray:
    keys = _time_key(da["time"].values)
    index = np.searchsorted(keys, times) if np.all(np.diff(keys) > 0) else np.array([np.flatnonzero(keys == t)[0] for t in times])
    return da.isel(time=index)


def _verify_variable(truth, forecast, obs, name, times, burn_in, names, mask_nonfinite=False) -> xr.Dataset:
    truth_name, forecast_name, obs_name = names
    for ds, label in ((truth, truth_name), (forecast, forecast_name)):
        if name not in ds.data_vars:
            raise DataError(label, f"no variable {name}")
    y = truth[name]
    if "member" in y.dims:
        raise DataError(truth_name, f"{name} is an ensemble; the truth must be a single state")
    f = forecast[name] if "member" in forecast[name].dims else forecast[name].expand_dims(member=1)
    space = [d for d in y.dims if d != "time"]
    if sorted(space) != sorted(d for d in f.dims if d not in ("member", "time")):
        raise DataError(forecast_name, f"{name} has dims {f.dims}, the truth {y.dims}")
    for d in space:
        if f.sizes[d] != y.sizes[d] or (d in y.coords and d in f.coords and not np.allclose(y[d].values, f[d].values)):
            raise DataError(forecast_name, f"{name}: grid along {d} differs from {truth_name}")
    members, nt = f.sizes["member"], len(times)
    frame_bytes = 8 * members * max(1, int(np.prod([y.sizes[d] for d in space])))
    block = max(1, BLOCK_BYTES // frame_bytes)
    y = _select_times(y, times).transpose("time", *space).chunk({"time": block})
    f = _select_times(f, times).transpose("member", "time", *space).chunk({"time": block})
    weights = _area_weights(y, space)
    after = y.isel(time=slice(burn_in, None))
    clim = after.where(np.isfinite(after)).mean("time").values.astype(np.float64)
    mask = _observed_mask(obs, name, y, space, obs_name) if obs is not None else None
    coords = {d: y[d].values for d in space if d in y.coords}
    starts = range(0, nt, block)
    tasks = [dask.delayed(_block_scores)(y.data[s:s + block], f.data[:, s:s + block], weights, clim, mask,
                                         np.arange(s, min(nt, s + block)) >= burn_in, tuple(space), coords, s,
                                         mask_nonfinite)
             for s in starts]
    blocks = dask.compute(*tasks)  # on the active dask scheduler: local threads, or a cluster
    masked = 0
    for label, key in ((forecast_name, "nonfinite_forecast"), (truth_name, "nonfinite_truth")):
        counts = np.concatenate([b[key] for b in blocks])
        masked += int(counts.sum())
        if counts.any() and not mask_nonfinite:
            first = int(np.flatnonzero(counts)[0])
            raise DataError(label, f"{name} has {int(counts.sum())} NaN/Inf values, the first at time {_show_time(times[first])}; "
                                   "--mask-nonfinite leaves such points out of every metric")
    if masked:
        warnings.warn(f"{forecast_name}: left {masked} grid values of {name} where the truth or a member is NaN/Inf "
                      "out of every metric", DaflowWarning, stacklevel=2)
    out = {m: np.concatenate([b[m] for b in blocks]) for m in PER_TIME}
    ranks = sum(b["ranks"] for b in blocks)
    spectra = {label: [b[label] for b in blocks if b.get(label) is not None] for label in ("truth", "forecast")}
    data = {m: ("time", v, {"long_name": _LONG_NAMES[m], "units": _units(y, m)})
            for m, v in out.items() if not np.isnan(v).all() or m in ("rmse", "bias", "crps")}
    if members > 1:
        data["rank_histogram"] = ("rank", ranks, {"long_name": "rank of the truth among the members (Talagrand)"})
    coords = {"time": ("time", y["time"].values, y["time"].attrs)}
    if spectra["truth"]:
        for label, items in spectra.items():
            total = sum(n for _, n in items)
            data[f"spectrum_{label}"] = ("wavenumber", sum(p * n for p, n in items) / total,
                                         {"long_name": f"variance spectrum of the {label}" + (" (ensemble mean)" if label == "forecast" else "")})
        coords["wavenumber"] = ("wavenumber", np.arange(len(spectra["truth"][0][0])))
    if members > 1:
        coords["rank"] = ("rank", np.arange(members + 1))
    return xr.Dataset(data, coords=coords, attrs={"nonfinite_masked": masked})


def _show_time(value) -> str:
    return str(np.datetime_as_string(value, unit="s")) if np.asarray(value).dtype.kind == "M" else f"{float(value):g}"


def _block_scores(yb, fb, weights, clim, mask, keep, space, coords, seed, mask_nonfinite=False) -> dict:
    """Scores of one block of times: per-time metrics, rank counts and spectra after burn-in.

    Non-finite values are counted per time (truth; points where any member is not finite); with
    ``mask_nonfinite`` those points get weight 0 in every metric, otherwise only the counts are returned.
    """
    yb, fb = np.asarray(yb, dtype=np.float64), np.asarray(fb, dtype=np.float64)
    members, nt = fb.shape[0], yb.shape[0]
    bad_truth, bad_forecast = ~np.isfinite(yb), ~np.isfinite(fb).all(axis=0)
    counts = {"nonfinite_truth": bad_truth.reshape(nt, -1).sum(axis=1),
              "nonfinite_forecast": (bad_forecast & ~bad_truth).reshape(nt, -1).sum(axis=1)}
    valid = ~(bad_truth | bad_forecast)
    if not valid.all():
        if not mask_nonfinite:
            return counts
        yb, fb = np.where(valid, yb, 0.0), np.where(valid, fb, 0.0)
        weights = weights * valid
    mean = fb.mean(axis=0)
    err = mean - yb
    nan = np.full(nt, np.nan)
    out = {
        "rmse": np.sqrt(_wmean(err**2, weights)),
        "bias": _wmean(err, weights),
        "crps": _wmean(crps_ensemble(fb, yb), weights),
        "crps_fair": _wmean(crps_ensemble(fb, yb, fair=True), weights) if members > 1 else nan,
        "spread": np.sqrt(_wmean(fb.var(axis=0, ddof=1), weights)) if members > 1 else nan,
        "rmse_observed": np.sqrt(_wmean(err**2, weights * mask)) if mask is not None else nan,
        "rmse_unobserved": np.sqrt(_wmean(err**2, weights * ~mask)) if mask is not None else nan,
        "ranks": np.zeros(members + 1, dtype=np.int64),
        **counts,
    }
    am, ay = mean - clim, yb - clim
    with np.errstate(invalid="ignore", divide="ignore"):
        out["acc"] = _wmean(am * ay, weights) / np.sqrt(_wmean(am**2, weights) * _wmean(ay**2, weights))
    if keep.any():
        if members > 1:
            rng = np.random.default_rng([0, seed])  # ties broken reproducibly, whatever the scheduling
            out["ranks"] = rank_histogram(truth_rank(fb[:, keep], yb[keep], rng)[valid[keep]], members)
        for label, field in (("truth", yb[keep]), ("forecast", mean[keep])):
            power = spectrum(field, space, coords) if valid[keep].all() else None
            out[label] = None if power is None else (power, int(keep.sum()))
    return out


_LONG_NAMES = {
    "rmse": "root-mean-square error of the ensemble mean",
    "bias": "mean error of the ensemble mean",
    "spread": "ensemble spread (root of the mean member variance)",
    "crps": "continuous ranked probability score",
    "crps_fair": "fair continuous ranked probability score",
    "acc": "anomaly correlation coefficient (climatology: truth time mean)",
    "rmse_observed": "RMSE over observed grid points",
    "rmse_unobserved": "RMSE over unobserved grid points",
}


def _units(y: xr.DataArray, metric: str) -> str:
    return "1" if metric == "acc" else str(y.attrs.get("units", "1"))


def _wmean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean over the trailing (space) axes, leaving out NaNs; one value per time."""
    w = np.broadcast_to(weights, values.shape)
    valid = np.isfinite(values) & (w > 0)
    axes = tuple(range(1, values.ndim))
    num = np.where(valid, values * w, 0.0).sum(axis=axes)
    den = np.where(valid, w, 0.0).sum(axis=axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _area_weights(y: xr.DataArray, space: list[str]) -> np.ndarray:
    """cos(latitude) on a geographic grid, broadcast over the space dims; 1 elsewhere."""
    shape = [y.sizes[d] for d in space]
    weights = np.ones(shape)
    if "lat" in space and y["lat"].ndim == 1:
        coslat = np.cos(np.deg2rad(y["lat"].values)).clip(min=0.0)
        axis = space.index("lat")
        weights = weights * coslat.reshape([-1 if i == axis else 1 for i in range(len(space))])
    return weights


def _observed_mask(obs: xr.Dataset, name: str, y: xr.DataArray, space: list[str], label: str) -> np.ndarray | None:
    """Grid points observed by a fixed pattern (broadcast over levels), or None with a warning."""
    hdims = horizontal_dims(space)
    rows = obs["variable"].values.astype(str) == name
    if not rows.any():
        warnings.warn(f"{label}: no observation of {name}; no observed/unobserved split", DaflowWarning, stacklevel=2)
        return None
    index = []
    for dim in hdims:
        if dim not in obs:
            raise DataError(label, f"observations have no {dim} location")
        loc = obs[dim].values[rows]
        if dim in ("lat", "lon"):
            grid = y[dim].values
            idx = np.abs(grid[None, :] - loc[:, None]).argmin(axis=1)
            if not np.allclose(grid[idx], loc, atol=1e-6):
                warnings.warn(f"{label}: observations are not on the grid points; no observed/unobserved split", DaflowWarning, stacklevel=2)
                return None
        else:
            idx = loc.astype(int)
        index.append(idx)
    cells = np.ravel_multi_index(index, [y.sizes[d] for d in hdims])
    times = _time_key(obs["time"].values[rows])
    pattern = None
    for t in np.unique(times):
        cells_t = np.unique(cells[times == t])
        if pattern is None:
            pattern = cells_t
        elif not np.array_equal(pattern, cells_t):
            warnings.warn(f"{label}: the observed points change with time; the observed/unobserved split needs a fixed pattern",
                          DaflowWarning, stacklevel=2)
            return None
    flat = np.zeros(int(np.prod([y.sizes[d] for d in hdims])), dtype=bool)
    flat[pattern] = True
    horizontal = flat.reshape([y.sizes[d] for d in hdims])
    return np.broadcast_to(horizontal.reshape([y.sizes[d] if d in hdims else 1 for d in space]), [y.sizes[d] for d in space])
