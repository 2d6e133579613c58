"""Map the names GRIB and NetCDF producers use onto the contract's names.

``number``/``realization`` -> ``member`` (standard_name realization), ``latitude`` -> ``lat``,
``longitude`` -> ``lon``, a vertical coordinate (``isobaricInhPa``, ``plev``, ``pressure_level``, anything
with ``axis = Z``) -> ``level``, ``valid_time`` or a coordinate with ``axis = T`` -> ``time``. A 1-D
latitude is sorted ascending so that every geographic state has the same orientation.
"""
from __future__ import annotations

import xarray as xr

ALIASES = {
    "member": ("member", "number", "realization", "ensemble", "ens", "ensemble_member"),
    "lat": ("lat", "latitude", "nav_lat"),
    "lon": ("lon", "longitude", "nav_lon"),
    "level": ("level", "lev", "plev", "pressure_level", "isobaricInhPa", "isobaricInPa", "hybrid", "depth",
              "height", "heightAboveGround", "heightAboveSea", "model_level_number", "pressure"),
    "time": ("time", "valid_time"),  # valid_time: the time dimension of the CDS's ERA5 NetCDF since 2024
}
STANDARD_NAMES = {
    "member": ("realization",),
    "lat": ("latitude", "grid_latitude"),
    "lon": ("longitude", "grid_longitude"),
    "level": ("air_pressure", "height", "altitude", "depth", "model_level_number",
              "atmosphere_hybrid_sigma_pressure_coordinate"),
    "time": ("time",),
}
AXES = {"level": "Z", "time": "T"}  # CF axis attribute of a coordinate that is the level or the time


def _find(ds: xr.Dataset, target: str) -> str | None:
    for name in ALIASES[target]:
        if name in ds.variables or name in ds.dims:
            return name
    for name, var in ds.coords.items():
        if var.attrs.get("standard_name") in STANDARD_NAMES[target]:
            return str(name)
        if target in AXES and var.attrs.get("axis") == AXES[target]:
            return str(name)
    return None


def to_contract_names(ds: xr.Dataset, level_name: str | None = None) -> xr.Dataset:
    """Rename dims and coordinates to the contract's names (``level_name`` forces the level)."""
    renames = {}
    for target in ("member", "lat", "lon", "level", "time"):
        found = level_name if target == "level" and level_name in ds.variables else _find(ds, target)
        if found and found != target and target not in ds.variables and target not in ds.dims:
            renames[found] = target
    ds = ds.rename(renames)
    if "member" in ds.coords:
        ds["member"].attrs.update(standard_name="realization", long_name="ensemble member")
    if "level" in ds.coords:
        ds["level"].attrs.setdefault("long_name", f"vertical level ({renames.get('level') or 'level'})")
    if "lat" in ds.dims and ds["lat"].ndim == 1 and ds.sizes["lat"] > 1 and ds["lat"][0] > ds["lat"][-1]:
        ds = ds.isel(lat=slice(None, None, -1))
    return ds
