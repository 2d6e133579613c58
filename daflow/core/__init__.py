"""The in-memory core: states, observations, grids, time, the Dynamics/Analysis protocols, the cycle.

Nothing here reads or writes files (``daflow.io``), parses command lines (click) or touches
netCDF4: the file layer and the CLI sit on top, the way xarray keeps ``backends/`` apart from
``core/``.

- :mod:`daflow.core.time`: the one representation of time (float model time or datetime64);
- :mod:`daflow.core.grid`: :class:`StateGrid` and the one rule that locates observations on it;
- :mod:`daflow.core.observations`: observations from a dataset or arrays, per-time :class:`ObsBatch`;
- :mod:`daflow.core.state`: a state/ensemble (tensor, model, clock) <-> ``state`` datasets;
- :mod:`daflow.core.protocols`: :class:`Dynamics` and :class:`Analysis`;
- :mod:`daflow.core.cycle`: the one cycle and its observation-space diagnostics.
"""
from __future__ import annotations
