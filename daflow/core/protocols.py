"""The two interfaces the cycle is written against: :class:`Dynamics` and :class:`Analysis`.

A state or ensemble is a tensor (members, *state_shape); members are independent rows.
``Dynamics.step`` advances it by dt (Lorenz-63/96, SQG: :class:`daflow.models.base.Model`; the
trained generative model: :class:`daflow.nn.generative.GenerativeDynamics`, which carries its
history frames). ``Analysis.transform`` maps a background (members, n) and the observations of one
time (:class:`daflow.core.observations.ObsBatch`) to the analysis (members, n) (OI, EnKF, ETKF,
LETKF, EnKF-N, EnSF: :class:`daflow.da.base.Filter`; storm: the generative model's posterior sampler).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from daflow.core.observations import ObsBatch


@runtime_checkable
class Dynamics(Protocol):
    """A model that advances a batch of independent states."""

    name: str
    variable: str
    dims: tuple[str, ...]
    time_units: str

    @property
    def state_shape(self) -> tuple[int, ...]: ...

    def step(self, x: torch.Tensor, dt: float) -> torch.Tensor:
        """(members, *state_shape) one step of length dt later."""
        ...


@runtime_checkable
class Analysis(Protocol):
    """An analysis scheme: background ensemble + observations of one time -> analysis ensemble."""

    name: ClassVar[str]
    min_members: ClassVar[int]
    differentiates: ClassVar[bool]  # True when it uses autograd (the cycle then keeps autograd on)

    def transform(self, background: torch.Tensor, obs: ObsBatch) -> torch.Tensor:
        """The analysis (members, n) of ``background`` (members, n)."""
        ...

    # Optional (a window analysis: storm): ``lag`` and ``lookahead``, ints in model steps, and
    # ``transform_span(background, [(offset, batch), ...]) -> {offset: analysis}``, called instead of
    # ``transform`` with every observation time from ``lag`` steps before to ``lookahead`` steps after
    # the analysis time (offset 0); it returns the analysis (offset 0) and may return revised analyses
    # of earlier times (offset < 0), which replace those the cycle holds.

    def attrs(self) -> dict[str, object]:
        """Settings recorded in the analysis dataset's global attributes."""
        ...
