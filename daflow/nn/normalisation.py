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
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PREDICT = ("state", "increment")


@dataclass(frozen=True)
class Normalisation:
    mean: torch.Tensor                          # (C,) mu
    std: torch.Tensor                           # (C,) s
    predict: str = "state"
    increment_std: torch.Tensor | None = None   # (C,) s_inc, for "increment"

    @classmethod
    def fit(cls, frames: np.ndarray, predict: str) -> Normalisation:
        """mu, s (and s_inc) of training frames (member, time, C, ny, nx); ValueError for an unknown ``predict``."""
        if predict not in PREDICT:
            raise ValueError(f"predict = {predict!r}; choose {' or '.join(PREDICT)}")
        mean, std = frames.mean(axis=(0, 1, 3, 4)), _positive(frames.std(axis=(0, 1, 3, 4)))
        increment = _positive(np.diff(frames, axis=1).std(axis=(0, 1, 3, 4))) if predict == "increment" else None
        return cls(torch.from_numpy(mean), torch.from_numpy(std), predict,
                   None if increment is None else torch.from_numpy(increment))

    @classmethod
    def from_dict(cls, record: dict) -> Normalisation:
        """Inverse of :meth:`to_dict`; a record without ``predict`` (older checkpoints) predicts the state."""
        increment = record.get("increment_std")
        return cls(torch.tensor(record["mean"], dtype=torch.float32), torch.tensor(record["std"], dtype=torch.float32),
                   record.get("predict", "state"), None if increment is None else torch.tensor(increment, dtype=torch.float32))

    def to_dict(self) -> dict:
        record = {"predict": self.predict, "mean": self.mean.tolist(), "std": self.std.tolist()}
        return record | ({"increment_std": self.increment_std.tolist()} if self.increment_std is not None else {})

    @property
    def target_scale(self) -> torch.Tensor:
        """(C,) physical units per unit of the target r: s for "state", s_inc for "increment"."""
        return self.std if self.predict == "state" else self.increment_std

    def normalise(self, physical: torch.Tensor) -> torch.Tensor:
        """h = (x - mu) / s of frames (..., C, ny, nx)."""
        return (physical - _grid(self.mean)) / _grid(self.std)

    def targets(self, history: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        """r (B, T, C, ny, nx) of normalised history (B, K, C, ny, nx) and future frames (B, T, C, ny, nx).

        "increment": r_j = (h_{t+j} - h_{t+j-1}) s / s_inc, the same as (x_{t+j} - x_{t+j-1}) / s_inc.
        """
        if self.predict == "state":
            return future
        return torch.diff(torch.cat([history[:, -1:], future], dim=1), dim=1) * _grid(self.std / self.increment_std)

    def to_physical(self, target: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Physical frames (B, T, C, ny, nx) of r (B, T, C, ny, nx), given the last physical history frame (B, 1, C, ny, nx)."""
        if self.predict == "state":
            return target * _grid(self.std) + _grid(self.mean)
        return last + torch.cumsum(target, dim=1) * _grid(self.increment_std)


def _positive(std: np.ndarray) -> np.ndarray:
    """A standard deviation usable as a divisor: 1 where the data are constant."""
    return np.where(std > 0, std, 1.0).astype(np.float32)


def _grid(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, 1, 1)  # (C,) -> (C, 1, 1), broadcast over (..., C, ny, nx)
