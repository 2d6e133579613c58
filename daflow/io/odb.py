"""ODB-2 feedback files (ECMWF's observation database) through pyodc.

One row per observed datum: ``obsvalue@body`` with ``varno@body`` (ECMWF's variable numbers:
1 z, 2 t, 3 u, 4 v, 7 q, 29 rh, 39 t2m, 40 d2m, 41 u10, 42 v10, 58 rh2m, 110 sp), ``lat@hdr``,
``lon@hdr``, ``date@hdr``/``time@hdr`` (YYYYMMDD, HHMMSS), ``statid@hdr``, ``stalt@hdr``,
``obstype@hdr`` (1 synop, 2 aircraft, 5 temp...), the vertical coordinate
``vertco_reference_1@body`` (Pa for pressure levels), the error ``final_obs_error@errstat`` and the
first-guess and analysis departures ``fg_depar@body`` and ``an_depar@body`` the analysis computed.
"""
from __future__ import annotations

import os

import numpy as np

from daflow.errors import DataError

ODB_MAGIC = b"\xff\xffODA"
VARNO = {1: "z", 2: "t", 3: "u", 4: "v", 7: "q", 29: "rh", 39: "t2m", 40: "d2m", 41: "u10", 42: "v10", 58: "rh2m", 110: "sp"}
OBSTYPE = {1: "synop", 2: "aircraft", 3: "satob", 4: "dribu", 5: "temp", 6: "pilot", 7: "satem", 8: "paob", 9: "scatt", 10: "limb"}


def is_odb(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        return f.read(5) == ODB_MAGIC


def read_odb(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of every row of an ODB-2 file (see the module docstring)."""
    import pyodc

    try:
        df = pyodc.read_odb(str(path), single=True)
    except Exception as err:  # pyodc raises ValueError, struct.error, EOFError... on damaged files
        text = "".join(c if c.isprintable() else "?" for c in str(err))[:120]
        raise DataError(path, f"cannot decode the ODB-2 file ({type(err).__name__}: {text or 'truncated or corrupted'})") from None
    if df is None or len(df) == 0:
        raise DataError(path, "no row in the ODB-2 file")
    need = ["obsvalue@body", "varno@body", "lat@hdr", "lon@hdr", "date@hdr", "time@hdr"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(path, f"ODB-2 file lacks column(s) {', '.join(missing)}")

    def column(name, default=np.nan):
        return df[name].to_numpy(dtype=np.float64, na_value=np.nan) if name in df.columns else np.full(len(df), default)

    date = df["date@hdr"].to_numpy().astype(np.int64)
    hms = df["time@hdr"].to_numpy().astype(np.int64)
    stamps = [f"{d // 10000:04d}-{d // 100 % 100:02d}-{d % 100:02d}T{t // 10000:02d}:{t // 100 % 100:02d}:{t % 100:02d}"
              for d, t in zip(date, hms)]
    try:
        time = np.array(stamps, dtype="datetime64[s]")
    except ValueError as err:
        raise DataError(path, f"impossible date@hdr/time@hdr ({err})") from None
    varno = df["varno@body"].to_numpy().astype(np.int64)
    obstype = column("obstype@hdr", 0).astype(np.int64)
    station = df["statid@hdr"].astype(str).str.strip().to_numpy(dtype=object) if "statid@hdr" in df.columns else np.full(len(df), "", object)
    error = column("final_obs_error@errstat")
    if np.isnan(error).all():
        error = column("obs_error@errstat")
    return {
        "station": station,
        "platform": np.array([OBSTYPE.get(int(o), f"obstype{int(o)}") for o in obstype], dtype=object),
        "time": time,
        "lat": column("lat@hdr"),
        "lon": column("lon@hdr"),
        "elevation": column("stalt@hdr"),
        "pressure": np.full(len(df), np.nan),
        "vertical_coordinate": column("vertco_reference_1@body"),
        "variable": np.array([VARNO.get(int(v), f"varno{int(v)}") for v in varno], dtype=object),
        "value": column("obsvalue@body"),
        "error_std": error,
        "fg_depar": column("fg_depar@body"),
        "an_depar": column("an_depar@body"),
    }
