"""A state or ensemble in memory: a tensor (members, *state_shape), its grid (the model's dims and
coordinates) and its clock, and the conversion to and from ``state`` datasets.

State datasets (data contract): the variable ``model.variable`` has dims
``(member, time, *model.dims)`` (``member`` dropped for a single state); the global attributes
``daflow_model``, ``daflow_model_params`` and ``daflow_model_dt`` (:meth:`Model.attrs`) rebuild the
model, so a run continued from a dataset needs no repeat of them.
"""
from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from daflow.core.time import is_calendar
from daflow.errors import DataError, OptionError
from daflow.models import model_class, model_from_attrs
from daflow.models.base import Model
from daflow.progress import track
from daflow.threads import SMALL_WORK, explicit



@dataclass
class State:
    """The last frame of a state dataset: (members, *state_shape), its time, and the model that made it."""

    model: Model
    dt: float
    x: torch.Tensor
    time: Any
    ensemble: bool


@contextlib.contextmanager
def threads_for(numel: int) -> Iterator[None]:
    """One torch thread for work on fewer than ``SMALL_WORK`` values (Lorenz-96 ensembles, a
    20-member SQG at N = 64), unless ``--threads`` was given: for them, waking and synchronising
    intra-op threads costs more than the arithmetic (policy: :mod:`daflow.threads`)."""
    previous = torch.get_num_threads()
    if numel < SMALL_WORK and explicit() is None:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def parse_params(name: str, pairs: dict[str, Any]) -> dict[str, Any]:
    """Typed constructor arguments of model ``name`` from KEY=VALUE pairs (text or numbers; types of the defaults)."""
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
        if isinstance(params[key], float) and math.isnan(params[key]):  # inf is allowed: SQG's tdiab = inf is "off"
            raise ValueError(f"{key}={text!r} is not a number")
    return params


def _check_finite(x: torch.Tensor, step: int, source: object) -> None:
    """A state that stopped being finite while the model stepped it: a blow-up (a smaller time step may help)."""
    if not bool(torch.isfinite(x).all()):
        raise DataError(None if source is None else str(source),
                        f"the model state blew up (NaN/Inf) at step {step} or before; try a smaller time step")


def _check_start(x: torch.Tensor, step: int, source: object) -> None:
    """A state that is not finite before the model steps it: bad input or a failed analysis, not the time step."""
    if not bool(torch.isfinite(x).all()):
        raise DataError(None if source is None else str(source),
                        f"the state holds NaN/Inf before step {step} (in the input or the analysis, not a blow-up of the model)")


def _steps(model: Any, x: torch.Tensor, dt: float, steps: int) -> torch.Tensor:
    """``steps`` steps in one ``model.advance`` call when the model has one (SQG keeps its spectrum
    between the steps, as sqgturb's ``advance`` does), else ``model.step`` repeated."""
    if hasattr(model, "advance"):
        return model.advance(x, dt, steps)
    for _ in range(steps):
        x = model.step(x, dt)
    return x


def _segments(model: Any, x: torch.Tensor, dt: float, counts: list[int]) -> Iterator[torch.Tensor]:
    """x after each of ``counts`` further steps (:func:`_steps`)."""
    for steps in counts:
        x = _steps(model, x, dt, steps)
        yield x


def advance(model: Any, x: torch.Tensor, dt: float, steps: int, source: object = None, first_step: int = 0) -> torch.Tensor:
    """x after ``steps`` steps of a :class:`Dynamics`, in one go; DataError when it stops being finite."""
    if steps:
        _check_start(x, first_step, source)
        x = _steps(model, x, dt, steps)
        _check_finite(x, first_step + steps, source)
    return x


def integrate(model: Any, x: torch.Tensor, dt: float, steps: int, output_every: int = 1,
              source: object = None, description: str = "forecast", progress: bool = True) -> torch.Tensor:
    """(frames, *x.shape): x and the state after every ``output_every``-th of ``steps`` steps, and
    after the last step when ``steps`` is not a multiple of ``output_every`` (:func:`kept_steps`);
    the steps between two frames go in one go (:func:`_steps`), or the model's ``trajectory`` gives
    them all when it has one."""
    frames = torch.empty((kept_count(steps, output_every), *x.shape), dtype=x.dtype, device=x.device)
    frames[0] = x
    if steps:
        _check_start(x, 0, source)
    ends = [*range(output_every, steps + 1, output_every), *([steps] if steps % output_every else [])]
    counter = track(ends, description, total=len(ends)) if progress else ends
    counts = np.diff([0, *ends]).tolist()
    # a model with a trajectory() (SQG) keeps its own state (a spectrum) across the frames: the output does not perturb the run
    trajectory = getattr(model, "trajectory", None)
    states = trajectory(x, dt, counts) if callable(trajectory) else _segments(model, x, dt, counts)
    for k, x in zip(counter, states):
        _check_finite(x, k, source)
        if k % output_every == 0:
            frames[k // output_every] = x
    if steps % output_every:
        frames[-1] = x
    return frames


def kept_count(steps: int, output_every: int) -> int:
    """len(kept_steps(steps, output_every)), without building the array."""
    return steps // output_every + 1 + (1 if steps % output_every else 0)


def kept_steps(steps: int, output_every: int) -> np.ndarray:
    """Step numbers of the frames :func:`integrate` keeps: 0, K, 2K, ... and always the final one."""
    kept = np.arange(0, steps + 1, output_every)
    return kept if kept[-1] == steps else np.append(kept, steps)


def state_dataset(model: Model, frames: torch.Tensor, times: np.ndarray, dt: float, ensemble: bool,
                  title: str = "model run") -> xr.Dataset:
    """State dataset from frames (time, members, *state_shape); ``ensemble=False`` drops member."""
    data = frames.detach().cpu().numpy()
    if ensemble:
        data, dims = np.swapaxes(data, 0, 1), ("member", "time", *model.dims)
    else:
        data, dims = data[:, 0], ("time", *model.dims)
    coords: dict[str, Any] = {d: (d, v, {"long_name": f"grid index along {d}"} if d in ("i", "y", "x") else {})
                              for d, v in model.coords().items()}
    if is_calendar(times):
        coords["time"] = ("time", times, {"standard_name": "time"})
    else:
        coords["time"] = ("time", np.asarray(times, dtype=np.float64), {"long_name": "model time", "units": model.time_units})
    if ensemble:
        coords["member"] = ("member", np.arange(data.shape[0], dtype=np.int32), {"standard_name": "realization"})
    var = {model.variable: (dims, data, {"long_name": f"{model.name} state", "units": model.units})}
    return xr.Dataset(var, coords=coords, attrs={"title": title, **model.attrs(dt)})


def state_from_dataset(ds: xr.Dataset, source: object = None, dtype: torch.dtype | None = None, device: str = "cpu",
                       params: dict[str, Any] | None = None) -> State:
    """The last frame of a state dataset, with the model rebuilt from its attributes (``params`` override)."""
    name_ = None if source is None else str(source)
    if "time" not in ds.dims:
        raise DataError(name_, "missing dimension(s) time")
    if ds.sizes["time"] == 0:
        raise DataError(name_, "has no time: no state to start from")
    try:
        model, dt = model_from_attrs(ds.attrs, device=device, **({"dtype": dtype} if dtype else {}))
    except KeyError:
        raise DataError(name_, "has no daflow_model attributes: not written by daflow forecast") from None
    except DataError as err:  # the file's model parameters are refused (e.g. an odd SQG grid): name the file
        if err.source is not None:
            raise
        raise DataError(name_, err.message) from None
    except (ValueError, TypeError) as err:  # an unknown model, unreadable parameters: the file is wrong, not the command
        if isinstance(err, OptionError):
            raise
        raise DataError(name_, f"its daflow_model attributes do not make a model: {err}") from None
    cls, merged = type(model), {**model.params, **(parse_params(model.name, params) if params else {})}
    name = model.variable
    if name not in ds.data_vars:
        raise DataError(name_, f"no state variable {str(name)!r} for model {model.name}")
    var = ds[name]
    space = tuple(d for d in var.dims if d not in ("member", "time"))
    shape = cls.shape_for(merged)  # checked before a model with overridden parameters builds its operators
    if sorted(map(str, space)) != sorted(model.dims) or tuple(var.sizes[d] for d in model.dims) != shape:
        raise DataError(name_, f"{name} has dims {dict(var.sizes)}; {model.name} {merged} needs "
                        f"{dict(zip(model.dims, shape))}")
    if params:
        model = cls(**merged, dtype=model.dtype, device=device)
    ensemble = "member" in var.dims
    last = var.isel(time=-1)
    last = last.transpose("member", *model.dims) if ensemble else last.transpose(*model.dims).expand_dims("member")
    x = torch.from_numpy(np.ascontiguousarray(last.values)).to(dtype=model.dtype, device=device)
    if not bool(torch.isfinite(x).all()):
        raise DataError(name_, f"{name} has NaN or Inf in its last frame")
    return State(model, dt, x, ds["time"].values[-1], ensemble)
