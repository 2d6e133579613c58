"""The data contract: stamping, checks on read, atomic writes."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from daflow.errors import DataError, InputMissing, OutputError
from daflow.io.atomic import atomic_path
from daflow.io.contract import open_dataset, write_dataset


def _state():
    return xr.Dataset({"x": (("i", "time"), np.arange(6.0).reshape(3, 2))}, coords={"time": [0.0, 1.0]})


def test_write_stamps_kind_history_and_canonical_order(tmp_path):
    path = tmp_path / "s.nc"
    write_dataset(_state(), path, "state")
    ds = open_dataset(path, ("state",), dims=("time", "i"))
    assert ds.attrs["daflow_kind"] == "state" and ds.attrs["Conventions"] == "CF-1.10"
    assert ds["x"].dims == ("time", "i")  # canonical order member, time, ..., i
    write_dataset(ds.load(), tmp_path / "t.nc", "analysis")
    history = xr.open_dataset(tmp_path / "t.nc").attrs["history"].splitlines()
    assert len(history) == 2 and history[1] == ds.attrs["history"]  # newest first, old line kept


def test_open_checks_kind_dims_and_existence(tmp_path):
    path = tmp_path / "s.nc"
    write_dataset(_state(), path, "state")
    with pytest.raises(DataError, match=r"s\.nc: daflow_kind 'state'; expected observations"):
        open_dataset(path, ("observations",))
    with pytest.raises(DataError, match=r"s\.nc: missing dimension\(s\) member"):
        open_dataset(path, ("state",), dims=("member",))
    with pytest.raises(InputMissing):
        open_dataset(tmp_path / "absent.nc")
    (tmp_path / "junk.nc").write_text("not netcdf")
    with pytest.raises(DataError, match="junk.nc: not a readable NetCDF"):
        open_dataset(tmp_path / "junk.nc")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.nc"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_only_when_complete(tmp_path):
    target = tmp_path / "out.nc"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["out.nc"]


def test_uncreatable_output_is_output_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="cannot create output"):
        write_dataset(_state(), tmp_path / "file" / "s.nc", "state")
