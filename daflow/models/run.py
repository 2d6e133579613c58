"""Running any registered model, and state files <-> tensors (generic over ``model.dims``).

``integrate`` steps a (members, *state_shape) tensor, keeps every K-th state and stops with a
:class:`DataError` naming the step when the state stops being finite. ``state_dataset`` and
``read_state`` convert between tensors and the state files of the data contract: the model name,
its parameters and dt travel as global attributes (:meth:`Model.attrs`), so a run continued from
a file needs no repeat of them. Times are float model time (``model.time_units``) or datetime64
when a calendar start was given; for dimensionless Lorenz time, 1 unit = 5 days (Lorenz 1996:
0.05 units ~ 6 hours).
"""
from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from daflow.errors import DataError
from daflow.io.contract import open_dataset
from daflow.models import model_class, model_from_attrs
from daflow.models.base import Model
from daflow.progress import track

SECONDS_PER_TIME_UNIT = {"s": 1.0, "1": 5 * 86400.0}
SMALL_TENSOR = 2**16


@contextlib.contextmanager
def threads_for(numel: int) -> Iterator[None]:
    """One torch thread for small tensors (e.g. Lorenz-96 ensembles): for them, waking and
    spinning intra-op threads costs more than the arithmetic (10x slower on a loaded machine)."""
    previous = torch.get_num_threads()
    if numel < SMALL_TENSOR:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def parse_params(name: str, pairs: dict[str, str]) -> dict:
    """Typed constructor arguments of model ``name`` from KEY=VALUE strings (types of the defaults)."""
    signature = inspect.signature(model_class(name).__init__).parameters
    params = {}
    for key, text in pairs.items():
        if key not in signature or key in ("self", "options"):
            known = [p for p in signature if p not in ("self", "options")]
            raise ValueError(f"{name} has no parameter {key!r}; its parameters: {', '.join(known)}")
        kind = type(signature[key].default)
        try:
            params[key] = kind(float(text)) if kind is int and float(text).is_integer() else kind(text)
        except ValueError:
            raise ValueError(f"{key}={text!r} is not a {kind.__name__}") from None
    return params


def advance(model: Model, x: torch.Tensor, dt: float, steps: int, source=None, first_step: int = 0) -> torch.Tensor:
    """x after ``steps`` steps; DataError naming the step where it stops being finite."""
    for k in range(first_step + 1, first_step + steps + 1):
        x = model.step(x, dt)
        _check_finite(x, k, source)
    return x


def integrate(model: Model, x: torch.Tensor, dt: float, steps: int, output_every: int = 1,
              source=None, description: str = "forecast", progress: bool = True) -> torch.Tensor:
    """(frames, *x.shape): x and the state after every ``output_every``-th of ``steps`` steps, and
    after the last step when ``steps`` is not a multiple of ``output_every`` (see :func:`kept_steps`)."""
    kept = kept_steps(steps, output_every)
    frames = torch.empty((len(kept), *x.shape), dtype=x.dtype, device=x.device)
    frames[0] = x
    counter = track(range(1, steps + 1), description, total=steps) if progress else range(1, steps + 1)
    for k in counter:
        x = model.step(x, dt)
        _check_finite(x, k, source)
        if k % output_every == 0:
            frames[k // output_every] = x
    if steps % output_every:
        frames[-1] = x
    return frames


def kept_steps(steps: int, output_every: int) -> np.ndarray:
    """Step numbers of the frames :func:`integrate` keeps: 0, K, 2K, ... and always the final one."""
    kept = np.arange(0, steps + 1, output_every)
    return kept if kept[-1] == steps else np.append(kept, steps)


def integrate_split(model: Model, x: torch.Tensor, dt: float, steps: int, output_every: int = 1,
                    source=None, groups: int = 1) -> torch.Tensor:
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


def _integrate_group(model: Model, x: torch.Tensor, dt: float, steps: int, output_every: int, source) -> torch.Tensor:
    torch.set_num_threads(1)
    return integrate(model, x, dt, steps, output_every, source, progress=False)


def _check_finite(x: torch.Tensor, step: int, source) -> None:
    if not bool(torch.isfinite(x).all()):
        raise DataError(source, f"the model state blew up (NaN/Inf) at step {step}; try a smaller --dt")


def elapsed(start, stop, time_units: str) -> float:
    """stop - start in model time units (times float or datetime64)."""
    if isinstance(start, np.datetime64) or np.asarray(start).dtype.kind == "M":
        seconds = (np.datetime64(stop, "ns") - np.datetime64(start, "ns")) / np.timedelta64(1, "s")
        return float(seconds) / SECONDS_PER_TIME_UNIT[time_units]
    return float(stop) - float(start)


def steps_between(start, stop, dt: float, time_units: str, source=None) -> int:
    """Number of dt steps from ``start`` to ``stop``; DataError unless a whole non-negative number."""
    gap = elapsed(start, stop, time_units)
    steps = int(round(gap / dt))
    if steps < 0 or abs(steps * dt - gap) > 1e-6 * max(dt, abs(gap)):
        raise DataError(source, f"time {stop} is not a whole number of dt={dt} steps after {start}")
    return steps


def frame_times(start, step_numbers: np.ndarray, dt: float, time_units: str) -> np.ndarray:
    """Times ``start + n dt`` of the frames after ``step_numbers`` steps (dt in model units)."""
    offsets = np.asarray(step_numbers, dtype=np.float64) * dt
    if isinstance(start, np.datetime64) or np.asarray(start).dtype.kind == "M":
        seconds = np.round(offsets * SECONDS_PER_TIME_UNIT[time_units] * 1e9).astype("timedelta64[ns]")
        return np.datetime64(start, "ns") + seconds
    return float(start) + offsets


def state_dataset(model: Model, frames: torch.Tensor, times: np.ndarray, dt: float, ensemble: bool,
                  title: str = "model run") -> xr.Dataset:
    """State file content from frames (time, members, *state_shape); ``ensemble=False`` drops member."""
    data = frames.detach().cpu().numpy()
    if ensemble:
        data, dims = np.swapaxes(data, 0, 1), ("member", "time", *model.dims)
    else:
        data, dims = data[:, 0], ("time", *model.dims)
    coords = {d: (d, v, {"long_name": f"grid index along {d}"} if d in ("i", "y", "x") else {})
              for d, v in model.coords().items()}
    if np.asarray(times).dtype.kind == "M":
        coords["time"] = ("time", times, {"standard_name": "time"})
    else:
        coords["time"] = ("time", np.asarray(times, dtype=np.float64),
                          {"long_name": "model time", "units": model.time_units})
    if ensemble:
        coords["member"] = ("member", np.arange(data.shape[0], dtype=np.int32), {"standard_name": "realization"})
    var = {model.variable: (dims, data, {"long_name": f"{model.name} state", "units": model.units})}
    return xr.Dataset(var, coords=coords, attrs={"title": title, **model.attrs(dt)})


@dataclass
class State:
    """The last frame of a state file: (members, *state_shape), its time, and the model that made it."""

    model: Model
    dt: float
    x: torch.Tensor
    time: object
    ensemble: bool


def read_state(path: str | os.PathLike, dtype: torch.dtype | None = None, device: str = "cpu",
               params: dict[str, str] | None = None) -> State:
    """The last frame of ``path``, with the model rebuilt from its attributes (``params``, KEY -> text, override)."""
    ds = open_dataset(path, kinds=("state", "analysis"), dims=("time",))
    try:
        model, dt = model_from_attrs(ds.attrs, device=device, **({"dtype": dtype} if dtype else {}))
    except KeyError:
        raise DataError(path, "has no daflow_model attributes: not written by daflow forecast") from None
    if params:
        model = type(model)(**{**model.params, **parse_params(model.name, params)}, dtype=model.dtype, device=device)
    name = model.variable
    if name not in ds.data_vars:
        raise DataError(path, f"no state variable {name!r} for model {model.name}")
    var = ds[name]
    space = tuple(d for d in var.dims if d not in ("member", "time"))
    if sorted(space) != sorted(model.dims) or tuple(var.sizes[d] for d in model.dims) != model.state_shape:
        raise DataError(path, f"{name} has dims {dict(var.sizes)}; {model.name} {model.params} needs "
                        f"{dict(zip(model.dims, model.state_shape))}")
    ensemble = "member" in var.dims
    last = var.isel(time=-1)
    last = last.transpose("member", *model.dims) if ensemble else last.transpose(*model.dims).expand_dims("member")
    x = torch.from_numpy(np.ascontiguousarray(last.values)).to(dtype=model.dtype, device=device)
    if not bool(torch.isfinite(x).all()):
        raise DataError(path, f"{name} has NaN or Inf in its last frame")
    time = ds["time"].values[-1]
    ds.close()
    return State(model, dt, x, time, ensemble)


def forecast(init: str, model_name: str | None = None, params: dict[str, str] | None = None, members: int | None = None,
             perturb: float = 0.0, spinup: int | None = None, dt: float | None = None, steps: int = 0,
             output_every: int = 1, seed: int | None = None, start: str | None = None,
             dtype: torch.dtype | None = None, groups: int = 1) -> xr.Dataset:
    """A model run as a state dataset (``daflow forecast``).

    ``init="random"``: ``members`` (default: one state, no member dim) draws of
    ``model.random_state`` spun up for ``spinup`` steps (default 1000), at time 0 or ``start``.
    Otherwise ``init`` is a state file: its last frame (every member) continues with the model,
    parameters (``params``, KEY -> text, override) and dt stored in it; a single state with ``members`` becomes
    that many copies. ``perturb`` adds N(0, perturb^2) noise to every value after the spin-up.
    The first frame is the initial state; then every ``output_every``-th of ``steps`` steps.
    ``groups`` > 1 runs the members in that many dask tasks (:func:`integrate_split`).
    ValueError for an unknown model or a bad parameter.
    """
    generator = torch.Generator()
    generator.manual_seed(seed) if seed is not None else generator.seed()
    if init == "random":
        if model_name is None:
            raise ValueError("--init random needs --model")
        model = model_class(model_name)(**parse_params(model_name, params or {}), **({"dtype": dtype} if dtype else {}))
        dt = dt or model.default_dt
        x = model.random_state(members or 1, generator)
        with threads_for(x.numel()):
            x = advance(model, x, dt, 1000 if spinup is None else spinup, "spin-up")
        t0 = np.datetime64(start.rstrip("Z"), "ns") if start else 0.0
        ensemble = members is not None
    else:
        state = read_state(init, dtype=dtype, params=params)  # params parsed for the file's model
        model, x, t0, ensemble = state.model, state.x, state.time, state.ensemble
        if model_name is not None and model_name != model.name:
            raise DataError(init, f"holds a {model.name} state, not {model_name}")
        dt = dt or state.dt
        if members is not None and members != x.shape[0]:
            if ensemble:
                raise DataError(init, f"is an ensemble of {x.shape[0]} members, not {members}")
            x, ensemble = x.expand(members, *x.shape[1:]).clone(), True
        ensemble = ensemble or members is not None
        with threads_for(x.numel()):
            x = advance(model, x, dt, spinup or 0, init)
        if start:
            t0 = np.datetime64(start.rstrip("Z"), "ns")
    if perturb:
        x = x + perturb * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    frames = integrate_split(model, x, dt, steps, output_every, None if init == "random" else init, groups)
    times = frame_times(t0, kept_steps(steps, output_every), dt, model.time_units)
    return state_dataset(model, frames, times, dt, ensemble, title=f"{model.name} run")
