"""Reading index series for ``daflow causal`` and writing its ``causal`` output and plot."""
from __future__ import annotations

import numpy as np
import xarray as xr

from daflow.causal.framework import CausalResult
from daflow.errors import DataError
from daflow.io.atomic import atomic_path
from daflow.io.contract import open_dataset


def read_series(paths) -> xr.Dataset:
    """Time series (dim ``time`` only) from ``state`` files, inner-joined on time."""
    return series_from_datasets([open_dataset(p, kinds=("state",), dims=("time",)) for p in paths], paths)


def series_from_datasets(datasets, names) -> xr.Dataset:
    """Time series (dim ``time`` only) of ``state`` datasets (``names`` in errors), inner-joined on time.

    A series name in two inputs is a DataError: one of the two would silently be analysed as the other."""
    parts, owner = [], {}
    for ds, name in zip(datasets, names):
        series = [v for v in ds.data_vars if ds[v].dims == ("time",)]
        if not series:
            raise DataError(name, "no time series (a variable with the single dimension time)")
        for v in series:
            if v in owner:
                raise DataError(name, f"series {v!r} is also in {owner[v]}; rename one "
                                      f"(daflow ingest {name} --rename {v}=NEW -o NEW_FILE)")
            owner[v] = name
        parts.append(ds[series].load())
    return xr.merge(parts, join="inner", compat="override")


def check_series(ds: xr.Dataset, target: str, drivers: list[str], lags: list[int], source: str) -> None:
    """One-line DataError for input that cannot be analysed."""
    for name in dict.fromkeys([target, *drivers]):
        if name not in ds:
            raise DataError(source, f"no series {name!r} (have {', '.join(map(str, ds.data_vars))})")
        values = ds[name].values.astype(float)
        if not np.isfinite(values).any():
            raise DataError(source, f"series {name!r} is all NaN over the common period")
        if np.nanstd(values) == 0:
            raise DataError(source, f"series {name!r} is constant")
    length = ds.sizes["time"]
    if max(lags) >= length:
        raise DataError(source, f"lag {max(lags)} is not shorter than the {length} common time steps")


def to_dataset(result: CausalResult, lags: list[int], drivers: list[str]) -> xr.Dataset:
    """The ``causal`` file: strength and p-value per driver and lag, the summary as scalars."""
    shape = (len(drivers), len(lags))
    unique, pval, selected = np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape, dtype="i1")
    for link in result.links:
        i, j = drivers.index(link.driver), lags.index(link.lag)
        unique[i, j], pval[i, j], selected[i, j] = link.unique, link.p_value, link.selected
    nats = {"units": "nats"}
    ds = xr.Dataset(
        {
            "unique": (("driver", "lag"), unique, {**nats, "long_name": "unique information of a parent given the "
                                                    "other parents; conditional information given the parents otherwise"}),
            "p_value": (("driver", "lag"), pval, {"long_name": "surrogate p-value"}),
            "selected": (("driver", "lag"), selected, {"long_name": "selected as a parent (1) or not (0)"}),
            "total_information": ((), result.total_information, nats),
            "total_p_value": ((), result.total_p_value),
            "interaction": ((), result.interaction, {**nats, "long_name": "sum of unique minus total information (synergy - redundancy)"}),
            "certainty": ((), result.certainty, {"long_name": "1 - exp(-2 total_information)"}),
            "unknown_share": ((), result.unknown_share, {"long_name": "1 - certainty"}),
        },
        coords={"driver": np.array(drivers, dtype=object), "lag": ("lag", np.array(lags), {"units": "time steps"})},
        attrs={"target": result.target, **{f"causal_{k}": str(v) for k, v in result.options.items()},
               "samples": result.samples},
    )
    if result.local_total is not None:
        ds["local_total"] = ("sample", result.local_total, {**nats, "long_name": "local total information"})
        ds["local_unique"] = (("parent", "sample"), result.local_unique, nats)
        ds = ds.assign_coords(parent=[f"{lk.driver}(t-{lk.lag})" for lk in result.parents])
    return ds


def plot(result: CausalResult, lags: list[int], drivers: list[str], path, series: xr.Dataset | None = None) -> None:
    """Strengths per driver and lag (filled markers: p < 0.05); with local measures on a 3-variable
    system, the local total information coloured on the trajectory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    three_d = result.local_total is not None and series is not None and len(series.data_vars) == 3
    fig = plt.figure(figsize=(11 if three_d else 6, 4))
    ax = fig.add_subplot(1, 2 if three_d else 1, 1)
    for d in drivers:
        links = [lk for lk in result.links if lk.driver == d]
        ax.plot([lk.lag for lk in links], [lk.unique for lk in links], "-", label=d)
        sig = [lk for lk in links if lk.p_value < 0.05]
        ax.plot([lk.lag for lk in sig], [lk.unique for lk in sig], "o", color=ax.lines[-1].get_color())
    ax.plot([], [], "o", color="0.4", label="dot: p < 0.05")  # explains the dots
    ax.set(xlabel="lag (time steps)", ylabel="unique information (nats)",
           title=f"{result.target}: certainty {result.certainty:.2f}, unknown {result.unknown_share:.2f}")
    ax.legend()
    if three_d:
        names = list(series.data_vars)
        pts = np.stack([series[n].values for n in names], axis=1)[-len(result.local_total):]
        ax3 = fig.add_subplot(1, 2, 2, projection="3d")
        sc = ax3.scatter(*pts.T, c=result.local_total, s=2, cmap="viridis")
        ax3.set(xlabel=names[0], ylabel=names[1], zlabel=names[2], title="local total information")
        fig.colorbar(sc, ax=ax3, shrink=0.6)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:  # the folder made if needed; lands with the command's other outputs
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)
