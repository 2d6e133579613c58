"""Assimilation runs: one analysis, or cycling (forecast with the file's model, analyse, repeat).

``cycle`` starts from the last frame of an ensemble file, forecasts with the model stored in it
to each observation time (steps = time gap / dt) and analyses there; the loop body is tensor
operations only. The output dataset is an ``analysis`` state file (analysis ensemble at every
observation time, optionally the backgrounds) plus the observation-space diagnostics per
observation, as DART and JEDI write them: ``obs_*`` copies of the observations, H(x) mean and
spread of background and analysis, and departures O-B and O-A (NaN where an observation was not
used: qc != 0).
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, fields

import numpy as np
import torch
import xarray as xr

from daflow.da import filter_class
from daflow.da.base import Diagnostics, Filter
from daflow.da.observations import ObsBatch, StateGrid, observation_batches
from daflow.errors import DaflowWarning, DataError
from daflow.obs.qc import QC_BACKGROUND, QC_MEANINGS
from daflow.io.contract import open_dataset
from daflow.obs.operators import get_operator
from daflow.models import params_from_attrs
from daflow.models.run import State, advance, read_state, state_dataset, steps_between, threads_for
from daflow.progress import track

DIAGNOSTICS = {
    "background_mean": "mean of H(x) over the background ensemble",
    "background_spread": "standard deviation of H(x) over the background ensemble",
    "analysis_mean": "mean of H(x) over the analysis ensemble",
    "analysis_spread": "standard deviation of H(x) over the analysis ensemble",
}


def make_filter(method: str, grid: StateGrid, **options) -> Filter:
    """The filter ``method`` with the options it takes (None values are left to its defaults)."""
    cls = filter_class(method)
    accepted = {f.name for f in fields(cls.settings_class)} if cls.settings_class else set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            accepted |= set(inspect.signature(klass.__init__).parameters)
    given = {k: v for k, v in options.items() if v is not None}
    extra = sorted(set(given) - accepted)
    if extra:
        raise ValueError(f"method {method} does not take {', '.join('--' + e.replace('_', '-') for e in extra)}")
    return cls(grid, **given)


@dataclass
class GriddedState:
    """The last frame of an ensemble file written by any source (e.g. ``daflow ingest`` of GRIB), no model attached.

    ``x`` (members, n) is the observed variable; ``frame`` holds every variable at that time, the
    template of the analysis file (the variables not observed are copied unchanged).
    """

    grid: StateGrid
    x: torch.Tensor
    time: object
    frame: xr.Dataset
    model: None = None


@dataclass
class AssimilationRun:
    state: State | GriddedState
    batches: list[ObsBatch]
    obs: xr.Dataset


def state_grid(state: State | GriddedState) -> StateGrid:
    return state.grid if isinstance(state, GriddedState) else StateGrid.from_model(state.model)


def prepare(init: str, obs_path: str, dtype: torch.dtype = torch.float64, min_members: int = 2,
            cycling: bool = True) -> AssimilationRun:
    """Read the starting ensemble and the observations, checked against each other.

    A file without a model (no ``daflow_model`` attributes) can be analysed once (``cycling=False``):
    its observed variable is the state (:class:`GriddedState`).
    """
    obs = open_dataset(obs_path, kinds=("observations",), dims=("obs",)).load()
    if not cycling and not has_model(init):
        state = read_gridded(init, obs, dtype)
    else:
        state = read_state(init, dtype=dtype)
    if state.x.shape[0] < min_members:
        raise DataError(init, f"has {state.x.shape[0]} member(s); this method needs at least {min_members}")
    batches = observation_batches(obs, state_grid(state), obs_path, dtype)
    return AssimilationRun(state, batches, obs)


def has_model(path: str) -> bool:
    ds = open_dataset(path, kinds=("state", "analysis"), dims=("time",))
    try:
        params_from_attrs(ds.attrs)
        return True
    except KeyError:
        return False
    finally:
        ds.close()


def read_gridded(path: str, obs: xr.Dataset, dtype: torch.dtype) -> GriddedState:
    """The last frame of the variable that ``obs`` observes in a gridded ensemble file without a model."""
    ds = open_dataset(path, kinds=("state", "analysis"), dims=("time",))
    observed = sorted(set(obs["variable"].values.astype(str))) if "variable" in obs else []
    names = [n for n in observed if n in ds.data_vars]
    if len(names) != 1:
        have = ", ".join(n for n in ds.data_vars if "time" in ds[n].dims)
        raise DataError(path, f"the observations are of {', '.join(observed) or 'no variable'}; one of the file's "
                              f"variables ({have}) must be observed, and only one")
    var = ds[names[0]]
    if "member" not in var.dims:
        raise DataError(path, f"{names[0]} has no member dimension: the ensemble methods need an ensemble "
                              "(daflow forecast --init FILE --members N --perturb S makes one)")
    space = tuple(d for d in var.dims if d not in ("member", "time"))
    last = var.isel(time=-1).transpose("member", *space).load()
    x = torch.from_numpy(np.ascontiguousarray(last.values.astype(np.float64)).reshape(last.sizes["member"], -1)).to(dtype)
    if not bool(torch.isfinite(x).all()):
        raise DataError(path, f"{names[0]} has NaN or Inf in its last frame")
    grid = StateGrid(names[0], space, tuple(var.sizes[d] for d in space),
                     {d: ds[d].values if d in ds.coords else np.arange(var.sizes[d]) for d in space})
    frame = ds.isel(time=[-1]).load()
    ds.close()
    return GriddedState(grid, x, ds["time"].values[-1], frame)


def cycle(run: AssimilationRun, filt: Filter, init_name=None, obs_name=None,
          save_background: bool = False) -> xr.Dataset:
    """Cycle from ``run.state`` through every observation time; the ``analysis`` dataset."""
    state, model = run.state, run.state.model
    if _before(run.batches[0].time, state.time):
        raise DataError(obs_name, f"first observation time {run.batches[0].time} is before the ensemble time "
                        f"{state.time} of {init_name}")
    members, shape = state.x.shape[0], model.state_shape
    gaps = [steps_between(a, b.time, state.dt, model.time_units, obs_name)
            for a, b in zip([state.time] + [b.time for b in run.batches[:-1]], run.batches)]
    x = state.x.reshape(members, -1)
    analyses = torch.empty((len(run.batches), members, x.shape[1]), dtype=x.dtype)
    backgrounds = torch.empty_like(analyses)
    first_step = 0
    # Inference mode drops autograd's bookkeeping from the ~100 small ops of a cycle (about 15%).
    with threads_for(x.numel()), torch.inference_mode(not filt.differentiates):
        for k, (batch, steps) in enumerate(track(list(zip(run.batches, gaps)), f"{filt.name} cycling", len(gaps))):
            x = advance(model, x.view(members, *shape), state.dt, steps, init_name, first_step).view(members, -1)
            first_step += steps
            backgrounds[k] = x
            x = filt.transform(x, batch)
            analyses[k] = x
        diagnostics = _bulk_diagnostics(run, backgrounds, analyses)
    times = np.array([b.time for b in run.batches])
    return _output(run, analyses, backgrounds if save_background else None, times, diagnostics, filt, rows=None)


def _bulk_diagnostics(run: AssimilationRun, backgrounds: torch.Tensor, analyses: torch.Tensor) -> dict:
    """Diagnostics of every observation of every cycle at once: H(x) of (cycles, members, n) frames."""
    rows = np.concatenate([b.rows for b in run.batches])
    cycle_of = torch.from_numpy(np.repeat(np.arange(len(run.batches)), [len(b.rows) for b in run.batches]))
    index = torch.cat([b.index for b in run.batches])
    names = run.obs["operator"].values[rows].astype(str)

    def h(frames):                                              # (cycles, members, n) -> (members, P)
        cycles, members, n = frames.shape
        at = frames.mT.reshape(cycles * n, members).index_select(0, cycle_of * n + index).mT
        out = torch.empty_like(at)
        for name in np.unique(names):
            where = torch.from_numpy(np.flatnonzero(names == name))
            out[:, where] = get_operator(name)(at[:, where])
        return out

    diag = Diagnostics.of(h(backgrounds), h(analyses))
    out = {}
    for name in DIAGNOSTICS:
        full = torch.full((run.obs.sizes["obs"],), float("nan"), dtype=analyses.dtype)
        full[torch.from_numpy(rows)] = getattr(diag, name)
        out[name] = full
    return out


def analyse_once(run: AssimilationRun, filt: Filter, background_name=None, obs_name=None) -> xr.Dataset:
    """One analysis of ``run.state`` with the observations at its time."""
    matching = [b for b in run.batches if not _before(b.time, run.state.time) and not _before(run.state.time, b.time)]
    if not matching:
        raise DataError(obs_name, f"no observation at the background time {run.state.time} of {background_name}")
    batch = matching[0]
    with threads_for(run.state.x.numel()):
        x, diag = filt.analyse(run.state.x.reshape(run.state.x.shape[0], -1), batch)
    diagnostics = {k: getattr(diag, k) for k in DIAGNOSTICS}
    # diagnostics are in batch order; the output keeps the batch's observations in that order
    return _output(run, x[None], None, np.array([batch.time]), diagnostics, filt, rows=batch.rows)


def assimilate_files(method: str, obs_path: str, init: str | None = None, background: str | None = None,
                     climatology: str | None = None, save_background: bool = False,
                     dtype: torch.dtype = torch.float64, **options) -> xr.Dataset:
    """``daflow assimilate``: cycle from ``init`` or analyse ``background`` once (exactly one given).

    OI of a ``background`` without ``climatology`` is a surface analysis with a parametric B
    (:mod:`daflow.da.surface`; options ``b_std``, ``b_length``, ``b_correlation``, ``orography``).
    ``qc_k``, the background check's k, applies to every method (0: no check).
    """
    surface = {k: options.pop(k) for k in ("b_std", "b_length", "b_correlation", "orography") if k in options}
    if method == "oi" and climatology is None and background is not None:
        qc_k = options.get("qc_k")
        return _surface_analysis(background, obs_path, qc_k=float("inf") if qc_k == 0 else qc_k, **surface)
    given = [k for k, v in surface.items() if v is not None]
    if given:
        raise ValueError(f"{', '.join('--' + k.replace('_', '-') for k in given)} go with --method oi --background and no --climatology")
    source = init or background
    run = prepare(source, obs_path, dtype, filter_class(method).min_members, cycling=init is not None)
    grid = state_grid(run.state)
    if climatology is not None:
        options["covariance"] = read_covariance(climatology, grid, dtype)
    filt = make_filter(method, grid, **options)
    if init is not None:
        return cycle(run, filt, init, obs_path, save_background)
    return analyse_once(run, filt, background, obs_path)


def _surface_analysis(background: str, obs_path: str, b_std=None, b_length=None, b_correlation=None, qc_k=None,
                      orography=None) -> xr.Dataset:
    from daflow.da.surface import analyse_forecast

    bg = open_dataset(background, kinds=("state", "analysis")).load()
    obs = open_dataset(obs_path, kinds=("observations",), dims=("obs",)).load()
    oro = None
    if orography is not None:
        ds = open_dataset(orography, kinds=None)
        names = [n for n in ("z", "orography", "orog", "hgt") if n in ds.data_vars]
        if not names:
            raise DataError(orography, "no orography variable (z, orography, orog or hgt)")
        oro = ds[names[0]].squeeze(drop=True).load()
        if names[0] == "z":
            oro = oro / 9.80665  # surface geopotential -> height
    return analyse_forecast(bg, obs, b_std, b_length, b_correlation or "gaussian", 5.0 if qc_k is None else qc_k, oro,
                            names=(background, obs_path))


def read_covariance(path: str, grid: StateGrid, dtype: torch.dtype) -> torch.Tensor:
    """Sample covariance over the times (and members) of ``grid.variable`` in a state file."""
    from daflow.da.oi import climatological_covariance

    ds = open_dataset(path, kinds=("state", "analysis"), dims=("time",))
    if grid.variable not in ds.data_vars:
        raise DataError(path, f"no variable {grid.variable}")
    var = ds[grid.variable]
    if tuple(var.sizes.get(d, -1) for d in grid.dims) != grid.shape:
        raise DataError(path, f"{grid.variable} is not on the grid of the ensemble {dict(zip(grid.dims, grid.shape))}")
    samples = var.transpose(..., *grid.dims).values.reshape(-1, grid.size)
    if samples.shape[0] < 2 or not np.isfinite(samples).all():
        raise DataError(path, "needs at least two finite states for a covariance")
    try:
        return climatological_covariance(torch.from_numpy(samples).to(dtype))
    except ValueError as err:
        raise DataError(path, str(err)) from None


def _before(a, b) -> bool:
    if np.asarray(a).dtype.kind == "M":
        return np.datetime64(a, "ns") < np.datetime64(b, "ns")
    return float(a) < float(b) - 1e-9


def _output(run, analyses, backgrounds, times, diagnostics, filt, rows) -> xr.Dataset:
    """The analysis dataset: ensemble (member, time, *dims) plus per-observation diagnostics."""
    model, state = run.state.model, run.state
    obs = _flag_rejected(run.obs, filt.rejected_rows())
    if isinstance(state, GriddedState):
        ds = _gridded_analysis(state, analyses, filt)
        add_observation_diagnostics(ds, obs if rows is None else obs.isel(obs=rows), diagnostics)
        ds.attrs.update({"daflow_method": filt.name, "inflation": filt.inflation, "rtps": filt.rtps})
        return ds
    frames = analyses.view(len(times), analyses.shape[1], *model.state_shape)
    ds = state_dataset(model, frames, times, state.dt, ensemble=True, title=f"{filt.name} analysis")
    if backgrounds is not None:
        bg = state_dataset(model, backgrounds.view_as(frames), times, state.dt, ensemble=True)[model.variable]
        ds[f"{model.variable}_background"] = bg.assign_attrs(long_name=f"{model.name} background (forecast) state")
    add_observation_diagnostics(ds, obs if rows is None else obs.isel(obs=rows), diagnostics)
    ds.attrs.update({"daflow_method": filt.name, "inflation": filt.inflation, "rtps": filt.rtps})
    return ds


def _gridded_analysis(state: GriddedState, analyses: torch.Tensor, filt: Filter) -> xr.Dataset:
    """The background's last frame with the analysed variable replaced (other variables as they were)."""
    grid, ds = state.grid, state.frame.copy()
    var = ds[grid.variable].transpose("member", "time", *grid.dims)
    values = analyses[-1].reshape(analyses.shape[1], 1, *grid.shape).cpu().numpy().astype(var.dtype)
    ds[grid.variable] = var.copy(data=values)
    ds.attrs["title"] = f"{filt.name} analysis"
    return ds


def _flag_rejected(obs: xr.Dataset, rows: np.ndarray) -> xr.Dataset:
    """``obs`` with qc = 6 (background check) at ``rows``, and a warning saying how many."""
    if rows.size == 0:
        return obs
    warnings.warn(f"{rows.size} observation(s) failed the background check (|O-B| beyond --qc-k robust standard "
                  "deviations): not assimilated, flagged qc = 6", DaflowWarning, stacklevel=2)
    out = obs.copy()
    qc = obs["qc"].values.astype(np.int8) if "qc" in obs else np.zeros(obs.sizes["obs"], np.int8)
    qc[rows] = QC_BACKGROUND
    out["qc"] = ("obs", qc, {"long_name": "quality flag", "flag_values": np.arange(7, dtype=np.int8), "flag_meanings": QC_MEANINGS})
    return out


def add_observation_diagnostics(ds: xr.Dataset, obs: xr.Dataset, diagnostics: dict) -> None:
    """Copy the observations into ``ds`` as ``obs_*`` with H(x) mean/spread, O-B and O-A ((obs,) tensors)."""
    for name, var in obs.variables.items():
        if name != "obs":
            ds[f"obs_{name}"] = ("obs", var.values, var.attrs)
    values = obs["value"].values
    for name, long_name in DIAGNOSTICS.items():
        ds[f"obs_{name}"] = ("obs", diagnostics[name].numpy(), {"long_name": long_name})
    ds["obs_omb"] = ("obs", values - diagnostics["background_mean"].numpy(), {"long_name": "observation minus background mean (O-B)"})
    ds["obs_oma"] = ("obs", values - diagnostics["analysis_mean"].numpy(), {"long_name": "observation minus analysis mean (O-A)"})
