"""The one interface every dynamical model implements (Lorenz-63/96, SQG, the generative model).

A model advances a batch of states, a torch tensor of shape ``(members, *state_shape)``, by one
time step: ``x_next = model.step(x, dt)``. Members are independent: row j of the output depends
only on row j of the input, so an ensemble is one tensor and one call.

State files (data contract): the state variable ``model.variable`` has dims
``(member, time, *model.dims)`` (``member`` dropped for a single state), and the global attributes
``daflow_model`` (registry name), ``daflow_model_params`` (JSON of :meth:`Model.params`) and
``daflow_model_dt`` let ``daflow forecast --init FILE`` rebuild the model without repeating options.
``time`` is float64 in ``model.time_units`` (Lorenz: dimensionless model time units; SQG: seconds),
or datetime64 when the run was given a calendar ``--start``.
"""
from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch

ATTR_NAME, ATTR_PARAMS, ATTR_DT = "daflow_model", "daflow_model_params", "daflow_model_dt"


class Model(ABC):
    """Base class: subclasses set the class attributes and implement ``step`` and ``random_state``."""

    name: ClassVar[str]            # registry name, e.g. "lorenz96"
    variable: ClassVar[str]        # name of the state variable in files, e.g. "x" or "theta"
    dims: ClassVar[tuple[str, ...]]  # state dims after (member, time), e.g. ("i",) or ("level", "y", "x")
    default_dt: ClassVar[float]    # default time step in time_units
    time_units: ClassVar[str]      # CF units of the float time coordinate ("1" or "s")
    units: ClassVar[str] = "1"     # CF units of the state variable
    work_per_value: ClassVar[int] = 8  # working values per state value while stepping (RK4 stages, temporaries)

    def __init__(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
        self.dtype = dtype
        self.device = torch.device(device)

    @property
    @abstractmethod
    def params(self) -> dict[str, float | int]:
        """Every parameter needed to rebuild the model: ``type(m)(**m.params)`` is the same model."""

    @property
    @abstractmethod
    def state_shape(self) -> tuple[int, ...]:
        """Shape of one state, matching ``dims``."""

    @classmethod
    @abstractmethod
    def shape_for(cls, params: dict) -> tuple[int, ...]:
        """The ``state_shape`` of ``cls(**params)``, known before the model (and its operators) is built."""

    @classmethod
    def operator_bytes(cls, params: dict, itemsize: int) -> int:
        """Bytes of the operators ``cls(**params)`` builds (index tables, transform matrices)."""
        return 0

    @classmethod
    def default(cls, name: str) -> object:
        """The default of constructor argument ``name`` (of the class or of :class:`Model`, e.g. dtype)."""
        for klass in cls.__mro__:
            if "__init__" in vars(klass):
                parameter = inspect.signature(vars(klass)["__init__"]).parameters.get(name)
                if parameter is not None:
                    return parameter.default
        raise KeyError(name)

    @abstractmethod
    def step(self, x: torch.Tensor, dt: float) -> torch.Tensor:
        """Advance (members, *state_shape) by one step of length dt."""

    def advance(self, x: torch.Tensor, dt: float, steps: int) -> torch.Tensor:
        """``steps`` steps of dt at once. Models whose internal state is richer than the grid state
        (SQG's spectrum) override it to keep that state between the steps."""
        for _ in range(steps):
            x = self.step(x, dt)
        return x

    @abstractmethod
    def random_state(self, members: int, generator: torch.Generator) -> torch.Tensor:
        """(members, *state_shape) starting states to spin up from (noise around a rest state)."""

    def coords(self) -> dict[str, np.ndarray]:
        """Coordinate values of ``dims`` (default: grid indices)."""
        return {d: np.arange(n) for d, n in zip(self.dims, self.state_shape)}

    def attrs(self, dt: float) -> dict[str, str | float]:
        """Global attributes that let a later run rebuild this model."""
        return {ATTR_NAME: self.name, ATTR_PARAMS: json.dumps(self.params, sort_keys=True), ATTR_DT: float(dt)}


def params_from_attrs(attrs: dict) -> tuple[str, dict, float]:
    """(name, params, dt) stored by :meth:`Model.attrs`; KeyError when the file has none."""
    return str(attrs[ATTR_NAME]), json.loads(attrs[ATTR_PARAMS]), float(attrs[ATTR_DT])
