"""daflow causal: information-theoretic drivers of a target series (daflow.causal)."""
from __future__ import annotations

import click

from daflow_cli.common import FiniteFloatRange, common_options, output_path, print_json


def _lags(ctx, param, value):
    try:
        first, _, last = value.partition("-")
        lags = list(range(int(first), int(last or first) + 1))
    except ValueError:
        raise click.BadParameter("expected N or FIRST-LAST, e.g. 1-12") from None
    if not lags:
        raise click.BadParameter(f"{value!r}: FIRST-LAST needs FIRST <= LAST")
    if lags[0] < 1:
        raise click.BadParameter("lags start at 1")
    return lags


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=output_path(dir_okay=False), help="Output causal NetCDF file.")
@click.option("--target", required=True, help="Target series.")
@click.option("--drivers", help="Driver series, comma-separated [default: all series, the target included].")
@click.option("--lags", default="1-12", callback=_lags, show_default=True, help="Lags N or FIRST-LAST (time steps).")
@click.option("--estimator", type=click.Choice(["ksg", "gaussian", "binned"]), default="ksg", show_default=True,
              help="Conditional mutual information: k-nearest neighbours (Kraskov-Stoegbauer-Grassberger), "
                   "Gaussian (linear, partial correlation) or binned histograms.")
@click.option("--k", type=click.IntRange(min=1), default=8, show_default=True, help="Neighbours of the k-NN estimator.")
@click.option("--surrogates", type=click.IntRange(min=1), default=200, show_default=True, help="Surrogates per test.")
@click.option("--pc-alpha", type=FiniteFloatRange(0, 1, min_open=True), default=0.2, show_default=True, help="Threshold of the parent selection.")
@click.option("--block-length", type=click.IntRange(min=1), help="Block-shuffle surrogates of this length instead of local permutations.")
@click.option("--local", is_flag=True, help="Also write local (per-sample) information.")
@click.option("--plot", type=output_path(dir_okay=False), help="PNG of strengths per driver and lag.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the surrogates.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@common_options
def causal(inputs, output, target, drivers, lags, estimator, k, surrogates, pc_alpha, block_length, local, plot,
           seed, as_json):
    """Parents of TARGET among lagged drivers, their unique and joint information, certainty.

    INPUTS are state files with time series (several are inner-joined on time).
    """
    from daflow.api import causal_analysis
    from daflow.causal.dataset import plot as plot_result
    from daflow.io.contract import write_dataset

    run = causal_analysis(*inputs, target=target, drivers=drivers, lags=lags, estimator=estimator, k=k, surrogates=surrogates,
                          pc_alpha=pc_alpha, block_length=block_length, local=local, seed=seed)
    write_dataset(run.dataset, output, "causal")
    if plot:
        plot_result(run.result, run.lags, run.drivers, plot, run.series)
    if as_json:
        print_json(run.result.summary())
