"""Lorenz-63 and Lorenz-96, batched over members, fourth-order Runge-Kutta.

Lorenz (1963), "Deterministic nonperiodic flow":
    dx/dt = sigma (y - x),  dy/dt = x (rho - z) - y,  dz/dt = x y - beta z,
with sigma = 10, rho = 28, beta = 8/3.
Lorenz (1996), "Predictability: a problem partly solved", cyclic i = 0..n-1:
    dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F,   F = 8,
for any n >= 4 (one torch expression: memory and time are linear in n, up to 10^6 and more).
Time is dimensionless; Lorenz (1996) equates 0.05 time units with 6 hours.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from daflow.models.base import Model


def rk4(tendency: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, dt: float) -> torch.Tensor:
    """One classical Runge-Kutta step of dx/dt = tendency(x): x + dt/6 (k1 + 2 k2 + 2 k3 + k4).

    Fused adds (``alpha=``) and in-place sums keep the op count low: Lorenz ensembles are small
    enough that per-op overhead, not arithmetic, sets the speed.
    """
    k1 = tendency(x)
    k2 = tendency(torch.add(x, k1, alpha=0.5 * dt))
    k3 = tendency(torch.add(x, k2, alpha=0.5 * dt))
    k4 = tendency(torch.add(x, k3, alpha=dt))
    return torch.add(x, k1.add_(k2.add_(k3), alpha=2.0).add_(k4), alpha=dt / 6.0)


class Lorenz63(Model):
    """Lorenz (1963): three variables x, y, z stored as ``x`` along dim ``i`` (0, 1, 2)."""

    name = "lorenz63"
    variable = "x"
    dims = ("i",)
    default_dt = 0.01
    time_units = "1"

    def __init__(self, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0, **options):
        super().__init__(**options)
        self.sigma, self.rho, self.beta = float(sigma), float(rho), float(beta)

    @property
    def params(self) -> dict[str, float]:
        return {"sigma": self.sigma, "rho": self.rho, "beta": self.beta}

    @property
    def state_shape(self) -> tuple[int]:
        return (3,)

    @classmethod
    def shape_for(cls, params: dict) -> tuple[int]:
        return (3,)

    def tendency(self, s: torch.Tensor) -> torch.Tensor:
        x, y, z = s.unbind(-1)  # each (members,)
        return torch.stack((self.sigma * (y - x), x * (self.rho - z) - y, x * y - self.beta * z), dim=-1)

    def step(self, x: torch.Tensor, dt: float) -> torch.Tensor:
        return rk4(self.tendency, x, dt)

    def random_state(self, members: int, generator: torch.Generator) -> torch.Tensor:
        """Unit noise around (1, 1, 25), inside the attractor's basin."""
        centre = torch.tensor([1.0, 1.0, 25.0], dtype=self.dtype, device=self.device)
        noise = torch.randn(members, 3, generator=generator, dtype=self.dtype, device=generator.device)
        return centre + noise.to(self.device)


class Lorenz96(Model):
    """Lorenz (1996) on ``dim`` cyclic variables with forcing ``forcing``."""

    name = "lorenz96"
    variable = "x"
    dims = ("i",)
    default_dt = 0.05
    time_units = "1"

    def __init__(self, dim: int = 40, forcing: float = 8.0, **options):
        super().__init__(**options)
        if int(dim) < 4:
            raise ValueError(f"lorenz96 needs dim >= 4, got {dim}")
        self.dim, self.forcing = int(dim), float(forcing)
        i = torch.arange(self.dim)
        self._neighbours = torch.cat(((i + 1) % self.dim, (i - 2) % self.dim, (i - 1) % self.dim))

    @property
    def params(self) -> dict[str, float | int]:
        return {"dim": self.dim, "forcing": self.forcing}

    @property
    def state_shape(self) -> tuple[int]:
        return (self.dim,)

    @classmethod
    def shape_for(cls, params: dict) -> tuple[int]:
        return (int(params.get("dim", cls.default("dim"))),)  # type: ignore[call-overload]

    @classmethod
    def operator_bytes(cls, params: dict, itemsize: int) -> int:
        """The neighbour index table: 3 dim int64, and its arange."""
        return 4 * 8 * cls.shape_for(params)[0]

    def tendency(self, x: torch.Tensor) -> torch.Tensor:
        # x: (members, dim); one gather of the neighbours x_{i+1}, x_{i-2}, x_{i-1}: (members, 3, dim)
        if self._neighbours.device != x.device:
            self._neighbours = self._neighbours.to(x.device)
        ahead, behind2, behind1 = x.index_select(-1, self._neighbours).view(*x.shape[:-1], 3, self.dim).unbind(-2)
        return torch.addcmul(self.forcing - x, ahead - behind2, behind1)

    def step(self, x: torch.Tensor, dt: float) -> torch.Tensor:
        return rk4(self.tendency, x, dt)

    def random_state(self, members: int, generator: torch.Generator) -> torch.Tensor:
        """Unit noise around the unstable rest state x_i = F."""
        noise = torch.randn(members, self.dim, generator=generator, dtype=self.dtype, device=generator.device)
        return self.forcing + noise.to(self.device)
