"""Running any registered model on datasets: ``daflow forecast`` in memory.

The stepping, the tensor <-> dataset conversion and the clock live in :mod:`daflow.core`;
this module starts a run from a random state or continues a ``state`` dataset, and can spread
the members over dask tasks.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import xarray as xr

from daflow.core.memory import check_fits
from daflow.core.state import advance, integrate, kept_count, kept_steps, parse_params, state_dataset, state_from_dataset, threads_for
from daflow.core.time import parse_start, step_times
from daflow.errors import DataError, OptionError
from daflow.models import model_class
from daflow.models.base import Model
from daflow.seeding import resolve_seed

__all__ = ["check_run_fits", "forecast", "integrate_split", "perturbed_ensemble"]


def check_run_fits(cls: type[Model], params: dict[str, Any], dtype: torch.dtype | None, members: int, frames: int) -> None:
    """OptionError (naming --steps, --members or --param, whichever factor is largest) before a run
    of ``members`` states of ``cls(**params)`` keeping ``frames`` frames could allocate more memory
    than is available: the kept frames, the ensemble's working copies and the model's operators."""
    shape = cls.shape_for(params)
    size = int(np.prod(shape, dtype=object))
    default: torch.dtype = cls.default("dtype")  # type: ignore[assignment]
    itemsize = torch.empty((), dtype=dtype or default).element_size()
    needed = cls.operator_bytes(params, itemsize) + members * size * itemsize * (frames + cls.work_per_value)
    factors = {"steps": frames, "members": members, "param": size}
    check_fits(needed, max(factors, key=factors.__getitem__),
               f"{frames} frames x {members} members x {size} values of {cls.name} {dict(zip(cls.dims, shape))}")


def integrate_split(model: Model, x: torch.Tensor, dt: float, steps: int, output_every: int = 1,
                    source: object = None, groups: int = 1) -> torch.Tensor:
    """:func:`integrate` with the members in ``groups`` groups, each a dask task.

    The tasks run on dask's local threads (one torch thread each, so groups use the cores side by
    side) or on the dask.distributed cluster that is active (``--scheduler``). Members are
    independent, so the frames equal those of one batched run.
    """
    if groups <= 1 or x.shape[0] == 1:
        with threads_for(x.numel()):
            return integrate(model, x, dt, steps, output_every, source)
    import dask

    parts = [dask.delayed(_integrate_group)(model, part, dt, steps, output_every, source)
             for part in torch.tensor_split(x, min(groups, x.shape[0]))]
    previous = torch.get_num_threads()
    try:
        return torch.cat(dask.compute(*parts), dim=1)
    finally:
        torch.set_num_threads(previous)


def _integrate_group(model: Model, x: torch.Tensor, dt: float, steps: int, output_every: int, source: object) -> torch.Tensor:
    torch.set_num_threads(1)
    return integrate(model, x, dt, steps, output_every, source, progress=False)


def forecast(init: xr.Dataset | str, model_name: str | None = None, params: dict[str, Any] | None = None,
             members: int | None = None, perturb: float = 0.0, spinup: int | None = None, dt: float | None = None,
             steps: int = 0, output_every: int = 1, seed: int | None = None, start: str | None = None,
             dtype: torch.dtype | None = None, groups: int = 1, source: object = None) -> xr.Dataset:
    """A model run as a state dataset (``daflow forecast``).

    ``init="random"``: ``members`` (default: one state, no member dim) draws of
    ``model.random_state`` spun up for ``spinup`` steps (default 1000), at time 0 or ``start``.
    Otherwise ``init`` is a state dataset (named ``source`` in errors): its last frame (every
    member) continues with the model, parameters (``params``, KEY -> value, override) and dt
    stored in it, after ``spinup`` steps (default 0; its clock runs on through them); a single state
    with ``members`` becomes that many copies. ``perturb`` adds
    N(0, perturb^2) noise to every value after the spin-up. The first frame is the initial state;
    then every ``output_every``-th of ``steps`` steps, and the final state. ``groups`` > 1 runs the members in that
    many dask tasks (:func:`integrate_split`). OptionError for an unknown model or a bad parameter.
    """
    generator = torch.Generator()
    if isinstance(init, str) or perturb:  # the random draws (a continued run without noise draws nothing)
        generator.manual_seed(resolve_seed(seed))
    if isinstance(init, str):
        if init != "random":
            raise OptionError("init", f"init is a state dataset or 'random', not {init!r}")
        if model_name is None:
            raise OptionError("model", "init 'random' needs a model")
        try:
            cls = model_class(model_name)
            options: dict[str, Any] = {"dtype": dtype} if dtype else {}
            typed = parse_params(model_name, params or {})
            check_run_fits(cls, typed, dtype, members or 1, kept_count(steps, output_every))
            model = cls(**typed, **options)
        except ValueError as err:
            if isinstance(err, OptionError):
                raise
            raise OptionError("model" if str(err).startswith("unknown model") else "param", str(err)) from None
        dt = dt or model.default_dt
        x = model.random_state(members or 1, generator)
        with threads_for(x.numel()):
            x = advance(model, x, dt, 1000 if spinup is None else spinup, "spin-up")
        t0: Any = parse_start(start) if start else 0.0
        ensemble = members is not None
        source = None
    else:
        try:
            state = state_from_dataset(init, source, dtype=dtype, params=params)  # params parsed for the dataset's model
        except ValueError as err:
            if isinstance(err, DataError):
                raise
            raise OptionError("param", str(err)) from None
        model, x, t0, ensemble = state.model, state.x, state.time, state.ensemble
        if model_name is not None and model_name != model.name:
            raise DataError(None if source is None else str(source), f"holds a {model.name} state, not {model_name}")
        dt = dt or state.dt
        check_run_fits(type(model), model.params, model.dtype, members or x.shape[0], kept_count(steps, output_every))
        if members is not None and members != x.shape[0]:
            if ensemble:
                raise DataError(None if source is None else str(source), f"is an ensemble of {x.shape[0]} members, not {members}")
            x, ensemble = x.expand(members, *x.shape[1:]).clone(), True
        ensemble = ensemble or members is not None
        with threads_for(x.numel()):
            x = advance(model, x, dt, spinup or 0, source)
        if start:
            t0 = parse_start(start)
        elif spinup:  # the file's clock runs on through the spin-up
            t0 = step_times(t0, np.array([spinup]), dt, model.time_units)[0]
    if perturb:
        x = x + perturb * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    frames = integrate_split(model, x, dt, steps, output_every, source, groups)
    times = step_times(t0, kept_steps(steps, output_every), dt, model.time_units)
    return state_dataset(model, frames, times, dt, ensemble, title=f"{model.name} run")


def perturbed_ensemble(ds: xr.Dataset, members: int | None, perturb: float, seed: int | None = None,
                       start: str | None = None, source: object = None) -> xr.Dataset:
    """An ensemble from the last frame of any gridded state (no model needed): member j of variable v is
    x_v + perturb * e_j, e_j ~ N(0, I) independent of every other draw (``perturb`` in each variable's units).

    A single state becomes ``members`` copies; an ensemble keeps its members (``members`` must match).
    ``start`` relabels the frame's time. The result is a ``state`` dataset that ``assimilate --background``
    analyses with the methods that do not forecast.
    """
    name = None if source is None else str(source)
    if ds.sizes.get("time", 0) == 0:
        raise DataError(name, "has no time: no state to start from")
    last = ds.isel(time=[-1]).load()
    variables = [v for v in last.data_vars if "time" in last[v].dims]
    if not variables:
        raise DataError(name, "has no variable along time")
    ensemble = "member" in last.dims
    if ensemble and members is not None and members != last.sizes["member"]:
        raise DataError(name, f"is an ensemble of {last.sizes['member']} members, not {members}")
    if not ensemble:
        last = last.expand_dims(member=np.arange(members or 1, dtype=np.int32))
        last["member"].attrs.update(standard_name="realization", long_name="ensemble member")
    rng = np.random.default_rng(resolve_seed(seed))
    out = last[variables]
    for v in variables:
        values = out[v].transpose("member", ...).values
        if not np.isfinite(values).all():
            raise DataError(name, f"{v} has NaN or Inf in its last frame")
        noisy = values + perturb * rng.standard_normal(values.shape) if perturb else values.copy()
        out[v] = (out[v].transpose("member", ...).dims, noisy.astype(values.dtype), ds[v].attrs)
    if start:
        out = out.assign_coords(time=("time", [parse_start(start)], ds["time"].attrs))
    out.attrs = dict(ds.attrs)
    return out
