"""daflow ingest: GRIB / NetCDF / climate-index text -> the data contract; synthetic observations."""
from __future__ import annotations

import math

import click

from daflow_cli.common import FiniteFloatRange, common_options, given_flags, output_path, parse_pairs, scheduler_option


OBSERVE_ONLY = ("fraction", "error_std", "pattern", "operator", "every")


def _bbox(ctx, param, value):
    if value is None:
        return None
    try:
        west, south, east, north = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("expected W,S,E,N in degrees") from None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise click.BadParameter(f"{value}: W,S,E,N must be finite numbers")
    if not -90 <= south <= north <= 90:
        raise click.BadParameter(f"{value}: needs -90 <= S <= N <= 90 (S = {south:g}, N = {north:g})")
    return west, south, east, north


def _chunks(ctx, param, value):
    from daflow.io.ingest import parse_chunks

    try:
        return None if value is None else parse_chunks(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _window(ctx, param, value):
    from daflow.io.ingest import parse_time_window

    if value is not None:
        try:
            parse_time_window(value)
        except ValueError as err:
            raise click.BadParameter(str(err)) from None
    return value


@click.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=output_path(dir_okay=False), help="Output NetCDF file.")
@click.option("--var", "variables", multiple=True, help="Keep only this variable, or the reports of it (repeatable).")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="GRIB key filter, cfgrib filter_by_keys (repeatable).")
@click.option("--bbox", callback=_bbox, metavar="W,S,E,N", help="Bounding box in degrees (grid points, or reports).")
@click.option("--time", "window", callback=_window, metavar="START/END", help="ISO-8601 time window; either side may be empty.")
@click.option("--chunks", callback=_chunks, metavar="DIM=N[,DIM=N]", help="Dask chunks for streaming, e.g. time=24 [default: time=auto].")
@click.option("--name", help="Name of the series of a single-series index file.")
@click.option("--rename", "renames", multiple=True, metavar="OLD=NEW", help="Rename a variable (repeatable).")
@click.option("--sel", "selections", multiple=True, metavar="DIM=VALUE",
              help="Keep one value along a dimension and drop it, e.g. member=0 or month=7 (repeatable).")
@click.option("--join", type=click.Choice(["exact", "inner", "outer"]), default="exact", show_default=True,
              help="Times of inputs holding different variables: the same (else refused), the common ones, or the union padded with NaN.")
@click.option("--obs-errors", type=click.Path(dir_okay=False), help="[reports] TOML table of observation errors: [platform] variable = std.")
@click.option("--blacklist", type=click.Path(dir_okay=False), help="[reports] File of station identifiers to flag (qc = 5), one a line.")
@click.option("--withhold", type=FiniteFloatRange(0, 1, min_open=True, max_open=True),
              help="[reports] Fraction of stations withheld for verification, written to --withheld.")
@click.option("--withheld", type=output_path(dir_okay=False), help="[reports] Output file of the withheld stations' reports.")
@click.option("--observe", is_flag=True, help="Write synthetic observations of the input instead of the state.")
@click.option("--fraction", type=FiniteFloatRange(0, 1, min_open=True), default=0.05, show_default=True,
              help="[--observe] Fraction of horizontal grid points observed.")
@click.option("--error-std", type=FiniteFloatRange(0, min_open=True), default=1.0, show_default=True,
              help="[--observe] Observation error standard deviation.")
@click.option("--pattern", type=click.Choice(["fixed", "random"]), default="fixed", show_default=True,
              help="[--observe] Same points at every time, or redrawn.")
@click.option("--operator", type=click.Choice(["identity", "arctan"]), default="identity", show_default=True,
              help="[--observe] Observation operator H.")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
              help="[--observe] Observe every K-th time.")
@click.option("--seed", type=int, help="Seed of the random draws.")
@scheduler_option
@common_options
def ingest(sources, output, variables, filters, bbox, window, chunks, name, renames, selections, join, obs_errors, blacklist, withhold, withheld,
           observe, fraction, error_std, pattern, operator, every, seed, scheduler):
    """Read GRIB, NetCDF or climate-index files (SOURCES, joined along time) into a state file.

    BUFR (SYNOP, SHIP, TEMP, aircraft), ODB-2 feedback and station CSV files become observation
    files instead. With --observe, draw synthetic observations H(x) + N(0, error_std^2) of the state.
    """
    from daflow.api import ingest as run
    from daflow.io.contract import write_dataset

    if (withhold is None) != (withheld is None):
        raise click.UsageError("--withhold and --withheld go together")
    given = given_flags(*OBSERVE_ONLY)
    if given and not observe:
        raise click.UsageError(f"{', '.join(given)} draw synthetic observations: add --observe")
    ds = run(*sources, var=variables, filter=parse_pairs(filters, "--filter"), bbox=bbox, time=window, chunks=chunks, name=name,
             rename=parse_pairs(renames, "--rename"), obs_errors=obs_errors, blacklist=blacklist, withhold=withhold,
             observe=observe, fraction=fraction, error_std=error_std, pattern=pattern, operator=operator, every=every, seed=seed,
             scheduler=scheduler, join=join, sel=parse_pairs(selections, "--sel"))
    if withhold is not None:
        kept, held = ds
        write_dataset(held, withheld, "observations")
        write_dataset(kept, output, "observations")
        return
    kind = "observations" if observe else ds.attrs.get("daflow_kind")
    write_dataset(ds, output, kind if kind in ("state", "analysis", "observations") else "state")
