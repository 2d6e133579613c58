"""daflow: data assimilation on xarray datasets (Python API) and files (the ``daflow`` command).

The verbs of the CLI, in memory: :func:`forecast`, :func:`ingest`, :func:`assimilate`, :func:`score`
(:func:`departures` against observations alone), :func:`train`, :func:`causal`, and :func:`open` for a
file (see :mod:`daflow.api`).
They are imported on first use, so ``import daflow`` stays light and imports no file layer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["assimilate", "causal", "departures", "forecast", "ingest", "open", "score", "summary", "train"]

if TYPE_CHECKING:
    from daflow.api import assimilate, causal, departures, forecast, ingest, open, score, summary, train  # noqa: A004, F401


def __getattr__(name: str) -> Any:
    if name in __all__:
        from daflow import api

        return getattr(api, name)
    raise AttributeError(f"module 'daflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])  # the lazily imported verbs too (tab completion, help())
