"""Figures of a scores dataset: RMSE and spread over time, rank histograms, spectra."""
from __future__ import annotations

import os

import numpy as np
import xarray as xr

from daflow.io.atomic import atomic_path


def plot_scores(scores: xr.Dataset, path: str | os.PathLike) -> None:
    """Write a PNG with one row per variable: time series, rank histogram, spectrum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["time"] + [p for p in ("rank_histogram", "spectrum_truth") if p in scores]
    nvar = scores.sizes["variable"]
    fig, axes = plt.subplots(nvar, len(panels), figsize=(5 * len(panels), 3.2 * nvar), squeeze=False)
    for row, name in enumerate(scores["variable"].values):
        s = scores.isel(variable=row)
        ax = axes[row][0]
        time = s["time"].values
        for metric, style in (("rmse", "-"), ("spread", "--"), ("rmse_unobserved", ":"), ("rmse_observed", "-.")):
            if metric in s and np.isfinite(s[metric].values).any():
                mean = float(s[f"{metric}_time_mean"])
                ax.plot(time, s[metric].values, style, label=f"{metric} (mean {mean:.3g})")
        if s.attrs.get("burn_in"):
            ax.axvline(time[int(s.attrs["burn_in"])], color="grey", lw=0.8)
        ax.set_title(f"{name}: error over time")
        units = str(s["units"].values) if "units" in s.coords else s["rmse"].attrs.get("units", "1")
        ax.set_ylabel("" if units == "1" else units)
        ax.set_xlabel("time")
        if np.asarray(time).dtype.kind == "M":
            import matplotlib.dates as mdates

            locator = mdates.AutoDateLocator(maxticks=6)
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.legend(fontsize=8)
        col = 1
        if "rank_histogram" in s:
            counts = s["rank_histogram"].values
            axes[row][col].bar(np.arange(len(counts)), counts / max(counts.sum(), 1), color="tab:blue")
            axes[row][col].axhline(1 / len(counts), color="k", lw=0.8)
            axes[row][col].set_title(f"{name}: rank histogram")
            col += 1
        if "spectrum_truth" in s:
            k = s["wavenumber"].values[1:]
            for label in ("truth", "forecast"):
                axes[row][col].loglog(k, s[f"spectrum_{label}"].values[1:], label=label)
            axes[row][col].set_xlabel("wavenumber")
            axes[row][col].set_title(f"{name}: variance spectrum")
            axes[row][col].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
