"""Moved to :mod:`daflow.core.observations` and :mod:`daflow.core.grid`; kept for the filters' imports."""
from __future__ import annotations

from daflow.core.grid import EARTH_RADIUS_KM, StateGrid, great_circle_km
from daflow.core.observations import REQUIRED, ObsBatch, observation_batches

__all__ = ["EARTH_RADIUS_KM", "REQUIRED", "ObsBatch", "StateGrid", "great_circle_km", "observation_batches"]
