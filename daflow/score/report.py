"""Text outputs of a scores dataset: per-time CSV and a summary table."""
from __future__ import annotations

import os

import xarray as xr

from daflow.io.atomic import atomic_path
from daflow.score.verify import PER_TIME


def write_csv(scores: xr.Dataset, path: str | os.PathLike) -> None:
    """One row per (variable, time) with every per-time metric."""
    metrics = [m for m in PER_TIME if m in scores]
    table = scores[metrics].to_dataframe().reset_index()[["variable", "time", *metrics]]
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")


def print_table(figures: dict) -> None:
    """The time-averaged figures per variable as a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"time means over {figures['n_times'] - figures['burn_in']} times "
                        f"(burn-in {figures['burn_in']}, {figures['members']} member(s))")
    keys = [k for k in ("rmse", "bias", "spread", "spread_skill", "crps", "crps_fair", "acc",
                        "rmse_observed", "rmse_unobserved")
            if any(v.get(k) is not None for v in figures["variables"].values())]
    table.add_column("variable", overflow="fold")
    for key in keys:
        table.add_column(key, justify="right", overflow="fold")  # wrapped, never cut to "0.21..."
    for name, values in figures["variables"].items():
        table.add_row(name, *("-" if values.get(k) is None else f"{values[k]:.4g}" for k in keys))
    console = Console()
    if not console.is_terminal:  # a pipe or a file: as wide as the table needs
        console = Console(width=1000)
    console.print(table)
