"""The map between physical frames and the variables the denoiser sees (stored in the checkpoint).

History frames are standardised per level, h_k = (x_k - mu) / s, with mu and s the mean and
standard deviation of each level over the training frames. The T target frames x_t .. x_{t+T-1}
that follow the last history frame x_{t-1} become the network's target r by ``predict``:

- "state":     r_j = (x_{t+j} - mu) / s;             back: x_{t+j} = mu + s r_j;
- "increment": r_j = (x_{t+j} - x_{t+j-1}) / s_inc;  back: x_{t+j} = x_{t-1} + s_inc sum_{i<=j} r_i,

s_inc being the per-level standard deviation of the one-step changes over the training frames,
so that r has about unit variance either way (the EDM preconditioning assumes it). With
"increment" the fine, slowly changing structure of the field (coasts, orography, inland maxima)
comes from the history and the network models only the change; patch seams then only affect the
small increment. Both maps are affine in r, so the likelihood guidance differentiates through them
exactly. Checkpoints written before the option have no ``predict`` key and predict the state.

``centre`` chooses the origin m that replaces mu in every window (history and target frames alike):

- "climate": m = mu, the training mean (the default, and that of checkpoints written before the option);
- "history": m = the per-level domain mean of the window's LAST history frame x_{t-1}, so
  h_k = (x_k - m) / s and r_j = (x_{t+j} - m) / s, back x_{t+j} = m + s r_j.

With "history" the network is invariant to a uniform offset of the window: adding c to every
history and target frame adds c to m and leaves h and r unchanged, so a period warmer or colder
than the training days is not pulled towards the training mean (the cold bias of the ERA5 t2m test
week, benchmarks/README.md). m depends on the history only, so the map stays affine in r and the
likelihood guidance differentiates through it exactly; s is kept (the t2m std about the window's
own mean is 0.85 of the climatological one on the ERA5 training days). With "increment", r is a
difference and does not depend on m; only the history frames are centred.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PREDICT = ("state", "increment")
CENTRE = ("climate", "history")


@dataclass(frozen=True)
class Normalisation:
    mean: torch.Tensor                          # (C,) mu
    std: torch.Tensor                           # (C,) s
    predict: str = "state"
    increment_std: torch.Tensor | None = None   # (C,) s_inc, for "increment"
    centre: str = "climate"

    @classmethod
    def fit(cls, frames: np.ndarray, predict: str, centre: str = "climate") -> Normalisation:
        """mu, s (and s_inc) of training frames (member, time, C, ny, nx); ValueError for an unknown ``predict`` or ``centre``."""
        if predict not in PREDICT:
            raise ValueError(f"predict = {predict!r}; choose {' or '.join(PREDICT)}")
        if centre not in CENTRE:
            raise ValueError(f"centre = {centre!r}; choose {' or '.join(CENTRE)}")
        mean, std = frames.mean(axis=(0, 1, 3, 4)), _positive(frames.std(axis=(0, 1, 3, 4)))
        increment = _positive(np.diff(frames, axis=1).std(axis=(0, 1, 3, 4))) if predict == "increment" else None
        return cls(torch.from_numpy(mean), torch.from_numpy(std), predict,
                   None if increment is None else torch.from_numpy(increment), centre)

    @classmethod
    def from_dict(cls, record: dict) -> Normalisation:
        """Inverse of :meth:`to_dict`; a record without ``predict`` / ``centre`` (older checkpoints) predicts the
        state / centres on the climate."""
        increment = record.get("increment_std")
        return cls(torch.tensor(record["mean"], dtype=torch.float32), torch.tensor(record["std"], dtype=torch.float32),
                   record.get("predict", "state"), None if increment is None else torch.tensor(increment, dtype=torch.float32),
                   record.get("centre", "climate"))

    def to_dict(self) -> dict:
        record = {"predict": self.predict, "centre": self.centre, "mean": self.mean.tolist(), "std": self.std.tolist()}
        return record | ({"increment_std": self.increment_std.tolist()} if self.increment_std is not None else {})

    @property
    def target_scale(self) -> torch.Tensor:
        """(C,) physical units per unit of the target r: s for "state", s_inc for "increment"."""
        return self.std if self.predict == "state" else self.increment_std

    def origin(self, last: torch.Tensor) -> torch.Tensor:
        """m of windows whose last physical history frame is ``last`` (B, 1, C, ny, nx): mu, or its per-level domain mean."""
        return _grid(self.mean) if self.centre == "climate" else last.mean(dim=(-2, -1), keepdim=True)

    def normalise(self, physical: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """h = (x - m) / s of frames (..., C, ny, nx); m = :meth:`origin` of ``last``, or mu without ``last``."""
        return (physical - (_grid(self.mean) if last is None else self.origin(last))) / _grid(self.std)

    def centred(self, history: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(history, r) of windows normalised with mu (B, K | T, C, ny, nx), re-centred on :meth:`origin`.

        "history": h - c and (state) r - c with c = the domain mean of h_{t-1} = (m - mu) / s, the same as
        normalising the physical frames with m; "climate": unchanged.
        """
        if self.centre == "climate":
            return history, target
        offset = history[:, -1:].mean(dim=(-2, -1), keepdim=True)
        return history - offset, target - offset if self.predict == "state" else target

    def targets(self, history: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        """r (B, T, C, ny, nx) of normalised history (B, K, C, ny, nx) and future frames (B, T, C, ny, nx).

        "increment": r_j = (h_{t+j} - h_{t+j-1}) s / s_inc, the same as (x_{t+j} - x_{t+j-1}) / s_inc.
        """
        if self.predict == "state":
            return future
        return torch.diff(torch.cat([history[:, -1:], future], dim=1), dim=1) * _grid(self.std / self.increment_std)

    def to_physical(self, target: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Physical frames (B, T, C, ny, nx) of r (B, T, C, ny, nx), given the last physical history frame
        ``last`` (B, 1, C, ny, nx): x = m + s r ("state") or x = x_{t-1} + s_inc sum r ("increment")."""
        if self.predict == "state":
            return target * _grid(self.std) + self.origin(last)
        return last + torch.cumsum(target, dim=1) * _grid(self.increment_std)


def _positive(std: np.ndarray) -> np.ndarray:
    """A standard deviation usable as a divisor: 1 where the data are constant."""
    return np.where(std > 0, std, 1.0).astype(np.float32)


def _grid(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, 1, 1)  # (C,) -> (C, 1, 1), broadcast over (..., C, ny, nx)
