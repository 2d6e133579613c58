"""Settings read from the environment, in one place.

``DAFLOW_SAMPLE_DATA``: folder of the real sample files (GRIB, NetCDF, ENSO indices) used by
tests, benchmarks and recipes; defaults to ``../shared/data`` beside the project root.
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def sample_data_dir() -> Path:
    """The sample-data folder (it may not exist on a user's fresh clone)."""
    return Path(os.environ.get("DAFLOW_SAMPLE_DATA", PROJECT_ROOT.parent / "shared" / "data"))
