"""Strong-constraint incremental 4D-Var (Le Dimet & Talagrand 1986; Courtier, Thepaut &
Hollingsworth 1994), the adjoint by autograd through the model's step.

Over a window of K observation times t_1..t_K after the window start t_0, with x_0 the state at
t_0, M_k the model from t_0 to t_k and B = U U^T, the control v (x_0 = x_b + U v) minimises
    J(v) = 1/2 |v|^2 + 1/2 sum_k |R_k^{-1/2} (y_k - H_k(M_k(x_b + U v)))|^2
(:mod:`daflow.da.var3d` for B and the minimisers: incremental Gauss-Newton with CG inner loops,
the tangent-linear model by forward-mode and the adjoint by reverse-mode autograd; or L-BFGS).
Each observation time's batch first passes the background check of every method (:mod:`daflow.da.base`)
against the background trajectory M_k(x_b). The analysis is the trajectory M_k(x_a) at t_1..t_K; cycling starts the next window from its
state at t_K with the same static B. On a linear model with a linear H, one outer loop gives the
exact minimiser: the Kalman smoother's estimate of x_0 given y_1..y_K and the prior N(x_b, B).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from daflow.core.observations import ObsBatch
from daflow.da.var3d import Var3D, VarSettings, minimise

Forward = Callable[[torch.Tensor, int], torch.Tensor]   # (members, n) state, steps -> state after them


@dataclass(frozen=True)
class Var4DSettings(VarSettings):
    """VarSettings plus window: observation times per assimilation window."""

    window: int = 5

    def __post_init__(self):
        super().__post_init__()
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")


class Var4D(Var3D):
    name = "4dvar"
    settings_class = Var4DSettings

    def __init__(self, grid, covariance: torch.Tensor | None = None, **options):
        super().__init__(grid, covariance, **options)
        for name, value, default in (("inflation", self.inflation, 1.0), ("rtps", self.rtps, 0.0)):
            if value != default:   # analyse_window applies neither: refused, not ignored
                raise ValueError(f"4dvar takes no {name} (its B is static; --b-scale scales it)")

    @property
    def window(self) -> int:
        return self.settings.window

    def analyse_window(self, x: torch.Tensor, batches: list[ObsBatch], gaps: list[int],
                       forward: Forward) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(backgrounds, analyses) at the times of ``batches``, each (members, n), from the window
        start ``x`` (members, n); ``gaps[k]`` model steps lead to batch k from the one before."""
        if not batches:
            raise ValueError("a 4D-Var window needs at least one observation time")
        background = x.detach()
        _, trajectory = self.window_functions(background, batches, gaps, forward)
        with torch.no_grad():
            first_guess = trajectory(background)
        # the background check of every method (Filter._checked), each time against the background trajectory
        used = [self._checked(b.apply(s), b) if self.qc_k else b for b, s in zip(batches, first_guess)]
        if all(b is None for b in used):
            return first_guess, [s.clone() for s in first_guess]
        residual, _ = self.window_functions(background, used, gaps, forward)
        v = minimise(self.settings, residual, torch.zeros_like(background))
        with torch.no_grad():
            return first_guess, trajectory(background + v @ self.U.to(x.dtype))

    def window_functions(self, background: torch.Tensor, batches: Sequence[ObsBatch | None], gaps: list[int],
                         forward: Forward):
        """(residual, trajectory): v -> R^{-1/2} (y - H(M(x_b + U v))) over the window, (members, P),
        and x_0 -> [M_k(x_0)]; J(v) = 1/2 |v|^2 + 1/2 |residual(v)|^2. A batch None (every observation of
        that time rejected by the background check) adds nothing to the residual."""
        U = self.U.to(background.dtype)

        def trajectory(x0):
            states = []
            for steps in gaps:
                x0 = forward(x0, steps)
                states.append(x0)
            return states

        def residual(v):
            states = trajectory(background + v @ U)
            return torch.cat([(b.value - b.apply(s)) / b.error_std for b, s in zip(batches, states) if b is not None], -1)

        return residual, trajectory
