"""The one assimilation cycle: forecast to each observation time, analyse, collect diagnostics.

``cycle`` starts from a :class:`State` (the last frame of an ensemble), advances it with its
:class:`Dynamics` to each observation time (steps = time gap / dt) and applies the
:class:`Analysis` there; the loop body is tensor operations only. ``analyse_once`` analyses a
background at its own time. Both return an ``analysis`` dataset: the analysis ensemble at every
observation time (optionally the backgrounds) plus the observation-space diagnostics per
observation, as DART and JEDI write them: ``obs_*`` copies of the observations, H(x) mean and
spread of background and analysis, and departures O-B and O-A (NaN where an observation was not
used: qc != 0).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import xarray as xr

from daflow.core.grid import StateGrid
from daflow.core.observations import Diagnostics, ObsBatch, observation_batches
from daflow.core.protocols import Analysis
from daflow.core.state import State, advance, state_dataset, threads_for
from daflow.core.time import before, same_time, steps_between
from daflow.errors import DaflowWarning, DataError
from daflow.obs.qc import QC_BACKGROUND, QC_MEANINGS
from daflow.obs.operators import get_operator
from daflow.progress import track

DIAGNOSTICS = {
    "background_mean": "mean of H(x) over the background ensemble",
    "background_spread": "standard deviation of H(x) over the background ensemble",
    "analysis_mean": "mean of H(x) over the analysis ensemble",
    "analysis_spread": "standard deviation of H(x) over the analysis ensemble",
}


def batches_for(state: State, obs: xr.Dataset, source: object = None) -> list[ObsBatch]:
    """The observations grouped by time and located on the state's grid, in the state's dtype."""
    return observation_batches(obs, StateGrid.from_model(state.model), source, state.x.dtype)


def check_members(state: State, analysis: Analysis, source: object = None) -> None:
    if state.x.shape[0] < analysis.min_members:
        raise DataError(None if source is None else str(source),
                        f"has {state.x.shape[0]} member(s); {analysis.name} needs at least {analysis.min_members}")


def cycle(state: State, obs: xr.Dataset, analysis: Analysis, batches: list[ObsBatch] | None = None,
          save_background: bool = False, names: tuple[object, object] = (None, None)) -> xr.Dataset:
    """Cycle from ``state`` through every observation time of ``obs``; the ``analysis`` dataset.

    An analysis with ``lag`` or ``lookahead`` (model steps, :class:`daflow.core.protocols.Analysis`)
    is given, at each observation time, the observations from ``lag`` steps before to ``lookahead``
    steps after it (``transform_span``), and may revise the analyses of the earlier observation
    times within its lag (a fixed-lag smoother); the output holds the latest analysis of each time.

    ``batches`` (default: :func:`batches_for`) may be given when already located; ``names`` are the
    (state, observations) sources named in errors.
    """
    init_name, obs_name = names
    check_members(state, analysis, init_name)
    batches = batches_for(state, obs, obs_name) if batches is None else batches
    model = state.model
    if before(batches[0].time, state.time):
        raise DataError(_str(obs_name), f"first observation time {batches[0].time} is before the ensemble time "
                        f"{state.time} of {init_name}")
    members, shape = state.x.shape[0], model.state_shape
    gaps = [steps_between(a, b.time, state.dt, model.time_units, obs_name)
            for a, b in zip([state.time] + [b.time for b in batches[:-1]], batches)]
    x = state.x.reshape(members, -1)
    analyses = torch.empty((len(batches), members, x.shape[1]), dtype=x.dtype)
    backgrounds = torch.empty_like(analyses)
    first_step = 0
    times = np.array([b.time for b in batches])
    if getattr(analysis, "window", None) is not None:   # e.g. 4D-Var: windows of observation times analysed at once
        with threads_for(x.numel()):
            cycle_windows(state, batches, analysis, x, gaps, backgrounds, analyses, init_name)
            diagnostics = bulk_diagnostics(obs, batches, backgrounds, analyses)
        return output(state, flag_rejected(obs, analysis), analyses, backgrounds if save_background else None, times, diagnostics, analysis)
    windowed: Any = analysis  # an optional extension of the protocol (lag, lookahead, transform_span)
    lag, lookahead = getattr(windowed, "lag", 0), getattr(windowed, "lookahead", 0)
    offsets = np.cumsum(gaps)  # model steps from the ensemble time to each observation time
    # Inference mode drops autograd's bookkeeping from the ~100 small ops of a cycle (about 15%).
    with threads_for(x.numel()), torch.inference_mode(not analysis.differentiates):
        for k, (batch, steps) in enumerate(track(list(zip(batches, gaps)), f"{analysis.name} cycling", len(gaps))):
            x = advance(model, x.view(members, *shape), state.dt, steps, init_name, first_step).view(members, -1)
            first_step += steps
            backgrounds[k] = x
            if lag or lookahead:  # observations from lag steps before to lookahead steps after this time; earlier analyses revised
                lo = int(np.searchsorted(offsets, offsets[k] - lag, side="left"))
                hi = int(np.searchsorted(offsets, offsets[k] + lookahead, side="right"))
                span = [(int(offsets[j] - offsets[k]), batches[j]) for j in range(lo, hi)]
                revised = windowed.transform_span(x, span)
                for j in range(lo, k):
                    analyses[j] = revised.get(int(offsets[j] - offsets[k]), analyses[j])
                x = revised[0]
            else:
                x = analysis.transform(x, batch)
            if not bool(torch.isfinite(x).all()):
                raise DataError(_str(init_name), f"the {analysis.name} analysis is NaN/Inf at observation time "
                                f"{batch.time} (the background was finite)")
            analyses[k] = x
        diagnostics = bulk_diagnostics(obs, batches, backgrounds, analyses)
    warn_if_diverged(obs, batches, diagnostics, obs_name)
    return output(state, flag_rejected(obs, analysis), analyses, backgrounds if save_background else None, times, diagnostics, analysis)


def model_forward(state: State, source: object = None) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """(members, n) -> state after ``steps`` model steps, differentiable (no finiteness check inside:
    autograd's batched transforms cannot branch on values); DataError naming ``source`` when the
    model's step is not differentiable."""
    model, dt, members = state.model, state.dt, state.x.shape[0]
    shape = model.state_shape
    if not callable(getattr(model, "step", None)) or not dt > 0:   # a gridded field read without its model
        raise DataError(_str(source), "has no model to step (no daflow_model attributes: not written by daflow forecast), "
                        "which a window method needs")

    def forward(x: torch.Tensor, steps: int) -> torch.Tensor:
        y = x.reshape(x.shape[0], *shape)
        for _ in range(steps):
            y = model.step(y, dt)
        return y.reshape(x.shape[0], -1)

    probe = state.x.reshape(members, -1)[:1].detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            differentiable = forward(probe, 1).requires_grad
    except RuntimeError:
        differentiable = False
    if not differentiable:
        raise DataError(_str(source), f"model {model.name} has no differentiable step, which a window method needs")
    return forward


def cycle_windows(state: State, batches: list[ObsBatch], analysis: Any, x: torch.Tensor, gaps: list[int],
                  backgrounds: torch.Tensor, analyses: torch.Tensor, init_name: object = None) -> None:
    """Windows of ``analysis.window`` observation times: each analysed at once (e.g. 4D-Var), the next
    starting from the analysis at the last time of the one before. The first window starts at most one
    observation interval (the longest gap between observation times) before its first observation, at it
    with a single observation time, as every later window does: a state far earlier is first forecast
    there, outside the window, so the adjoint never runs through the lead time."""
    forward = model_forward(state, init_name)
    interval = max(gaps[1:], default=0)
    if gaps[0] > interval:
        with torch.no_grad():
            x = forward(x, gaps[0] - interval)
        gaps = [interval, *gaps[1:]]
    count = len(batches)
    starts = list(range(0, count, analysis.window))
    for start in track(starts, f"{analysis.name} cycling", len(starts)):
        stop = min(start + analysis.window, count)
        bgs, ans = analysis.analyse_window(x, batches[start:stop], gaps[start:stop], forward)
        for k, (b, a) in enumerate(zip(bgs, ans), start):
            if not bool(torch.isfinite(b).all()):
                raise DataError(_str(init_name), f"the model state blew up (NaN/Inf) before observation time "
                                f"{batches[k].time}; try a smaller time step")
            if not bool(torch.isfinite(a).all()):
                raise DataError(_str(init_name), f"the {analysis.name} analysis is NaN/Inf at observation time "
                                f"{batches[k].time} (the background was finite)")
            backgrounds[k], analyses[k] = b, a
        x = analyses[stop - 1]


def bulk_diagnostics(obs: xr.Dataset, batches: list[ObsBatch], backgrounds: torch.Tensor, analyses: torch.Tensor) -> dict[str, torch.Tensor]:
    """Diagnostics of every observation of every cycle at once, NaN for unused ones: H(x) of (cycles, members, n) frames."""
    rows = np.concatenate([b.rows for b in batches])
    cycle_of = torch.from_numpy(np.repeat(np.arange(len(batches)), [len(b.rows) for b in batches]))
    index = torch.cat([b.index for b in batches])
    operators = obs["operator"].values[rows].astype(str)

    def h(frames: torch.Tensor) -> torch.Tensor:                 # (cycles, members, n) -> (members, P)
        cycles, members, n = frames.shape
        at = frames.mT.reshape(cycles * n, members).index_select(0, cycle_of * n + index).mT
        out = torch.empty_like(at)
        for name in np.unique(operators):
            where = torch.from_numpy(np.flatnonzero(operators == name))
            out[:, where] = get_operator(name)(at[:, where])
        return out

    diag = Diagnostics.of(h(backgrounds), h(analyses))
    out = {}
    for name in DIAGNOSTICS:
        full = torch.full((obs.sizes["obs"],), float("nan"), dtype=analyses.dtype)
        full[torch.from_numpy(rows)] = getattr(diag, name)
        out[name] = full
    return out


def analyse_once(state: State, obs: xr.Dataset, analysis: Analysis, batches: list[ObsBatch] | None = None,
                 names: tuple[object, object] = (None, None)) -> xr.Dataset:
    """One analysis of ``state`` with the observations at its time; the ``analysis`` dataset."""
    background_name, obs_name = names
    check_members(state, analysis, background_name)
    batches = batches_for(state, obs, obs_name) if batches is None else batches
    if getattr(analysis, "window", None) is not None:
        return _analyse_window_once(state, obs, analysis, batches, names)
    matching = [b for b in batches if same_time(b.time, state.time)]
    if not matching:
        raise DataError(_str(obs_name), f"no observation at the background time {state.time} of {background_name}")
    batch = matching[0]
    x = state.x.reshape(state.x.shape[0], -1)
    with threads_for(state.x.numel()):
        result = analysis.transform(x, batch)
        if not bool(torch.isfinite(result).all()):
            raise DataError(_str(background_name), f"the {analysis.name} analysis is NaN/Inf at time {batch.time} "
                            "(the background was finite)")
        diag = Diagnostics.of(batch.apply(x), batch.apply(result))
    diagnostics = {k: getattr(diag, k) for k in DIAGNOSTICS}
    # diagnostics are in batch order; the output keeps the batch's observations in that order
    return output(state, flag_rejected(obs, analysis).isel(obs=batch.rows), result[None], None, np.array([batch.time]), diagnostics, analysis)


def _analyse_window_once(state: State, obs: xr.Dataset, analysis: Any, batches: list[ObsBatch],
                         names: tuple[object, object]) -> xr.Dataset:
    """One window from the background's time: its first ``analysis.window`` observation times at or after it."""
    background_name, obs_name = names
    later = [b for b in batches if not before(b.time, state.time)][:analysis.window]
    if not later:
        raise DataError(_str(obs_name), f"no observation at or after the background time {state.time} of {background_name}: "
                        "the window is empty")
    model_forward(state, background_name)   # a model that can step (differentiably) before the steps between times
    gaps = [steps_between(a, b.time, state.dt, state.model.time_units, obs_name)
            for a, b in zip([state.time] + [b.time for b in later[:-1]], later)]
    x = state.x.reshape(state.x.shape[0], -1)
    analyses = torch.empty((len(later), *x.shape), dtype=x.dtype)
    backgrounds = torch.empty_like(analyses)
    with threads_for(x.numel()):
        cycle_windows(state, later, analysis, x, gaps, backgrounds, analyses, background_name)
        full = bulk_diagnostics(obs, later, backgrounds, analyses)
    rows = np.concatenate([b.rows for b in later])
    diagnostics = {k: v[torch.from_numpy(rows)] for k, v in full.items()}
    return output(state, flag_rejected(obs, analysis).isel(obs=rows), analyses, None, np.array([b.time for b in later]), diagnostics, analysis)


def output(state: State, obs: xr.Dataset, analyses: torch.Tensor, backgrounds: torch.Tensor | None, times: np.ndarray,
           diagnostics: dict[str, torch.Tensor], analysis: Analysis) -> xr.Dataset:
    """The analysis dataset: ensemble (member, time, *dims) plus per-observation diagnostics."""
    model = state.model
    frames = analyses.view(len(times), analyses.shape[1], *model.state_shape)
    if hasattr(model, "dataset"):  # dynamics with their own layout (the generative model keeps its input's)
        ds = model.dataset(frames, times, title=f"{analysis.name} analysis")
        add_observation_diagnostics(ds, obs, diagnostics)
        ds.attrs.update(analysis.attrs())
        return ds  # type: ignore[no-any-return]
    ds = state_dataset(model, frames, times, state.dt, ensemble=True, title=f"{analysis.name} analysis")
    if backgrounds is not None:
        bg = state_dataset(model, backgrounds.view_as(frames), times, state.dt, ensemble=True)[model.variable]
        ds[f"{model.variable}_background"] = bg.assign_attrs(long_name=f"{model.name} background (forecast) state")
    add_observation_diagnostics(ds, obs, diagnostics)
    ds.attrs.update(analysis.attrs())
    return ds


DIVERGENCE_RATIO = 3.0


def warn_if_diverged(obs: xr.Dataset, batches: list[ObsBatch], diagnostics: dict[str, torch.Tensor], source: object = None) -> float:
    """Warn when O-B over the second half of the cycles is far larger than the ensemble expects.

    ratio = rms(O-B) / rms(sqrt(sigma_o^2 + spread_b^2)) over the observations used; a calibrated
    ensemble gives about 1, a diverged filter (an ensemble that has collapsed far from the truth)
    several (EnKF, 20 members, no inflation on Lorenz-96: RMSE 4.5 with spread 0.2). Returns the ratio.
    """
    later = batches[len(batches) // 2:]
    if not later:
        return float("nan")
    rows = torch.from_numpy(np.concatenate([b.rows for b in later]))
    value = torch.as_tensor(obs["value"].values)[rows].double()
    error = torch.as_tensor(obs["error_std"].values)[rows].double()
    omb = value - diagnostics["background_mean"][rows].double()
    expected = error**2 + diagnostics["background_spread"][rows].double() ** 2
    ratio = float(omb.square().mean().sqrt() / expected.mean().sqrt())
    if ratio > DIVERGENCE_RATIO:
        warnings.warn(f"{_str(source) or 'observations'}: O-B is {ratio:.1f} times its expected size sqrt(so^2 + spread^2) "
                      "over the second half of the cycles: the filter has probably diverged (more inflation, "
                      "localisation or members)", DaflowWarning, stacklevel=2)
    return ratio


def flag_rejected(obs: xr.Dataset, analysis: Any) -> xr.Dataset:
    """``obs`` with qc = 6 where the analysis's background check rejected an observation (with a warning)."""
    rows = analysis.rejected_rows() if hasattr(analysis, "rejected_rows") else np.zeros(0, np.int64)
    if rows.size == 0:
        return obs
    warnings.warn(f"{rows.size} observation(s) failed the background check (|O-B| beyond --qc-k robust standard "
                  "deviations): not assimilated, flagged qc = 6", DaflowWarning, stacklevel=2)
    out = obs.copy()
    qc = obs["qc"].values.astype(np.int8) if "qc" in obs else np.zeros(obs.sizes["obs"], np.int8)
    qc[rows] = QC_BACKGROUND
    out["qc"] = ("obs", qc, {"long_name": "quality flag", "flag_values": np.arange(7, dtype=np.int8), "flag_meanings": QC_MEANINGS})
    return out


def add_observation_diagnostics(ds: xr.Dataset, obs: xr.Dataset, diagnostics: dict[str, Any]) -> None:
    """Copy the observations into ``ds`` as ``obs_*`` with H(x) mean/spread, O-B and O-A ((obs,) tensors)."""
    for name, var in obs.variables.items():
        if name != "obs":
            ds[f"obs_{name}"] = ("obs", var.values, var.attrs)
    values = obs["value"].values
    for name, long_name in DIAGNOSTICS.items():
        ds[f"obs_{name}"] = ("obs", _numpy(diagnostics[name]), {"long_name": long_name})
    ds["obs_omb"] = ("obs", values - _numpy(diagnostics["background_mean"]), {"long_name": "observation minus background mean (O-B)"})
    ds["obs_oma"] = ("obs", values - _numpy(diagnostics["analysis_mean"]), {"long_name": "observation minus analysis mean (O-A)"})


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _str(source: object) -> str | None:
    return None if source is None else str(source)
