"""Observation operators y = H(x), written in torch so filters can differentiate through them.

Each operator maps a tensor of state values at the observed points to observation space,
element-wise. ``identity``: H(x) = x. ``arctan``: H(x) = arctan(x), the strongly nonlinear
operator of the EnSF papers (Bao, Zhang & Zhang 2024), whose Jacobian 1/(1+x^2) vanishes for
large |x| so that linear-Gaussian filters lose the information in the observation.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

OPERATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "arctan": torch.atan,
}


def get_operator(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        return OPERATORS[name]
    except KeyError:
        raise ValueError(f"unknown observation operator {str(name)!r}; choose from {', '.join(OPERATORS)}") from None


def apply_operator(name: str, values: np.ndarray) -> np.ndarray:
    """H applied to a NumPy array (same dtype out)."""
    return get_operator(name)(torch.from_numpy(np.ascontiguousarray(values))).numpy()
