"""daflow score: verification of a forecast or analysis against a truth."""
from __future__ import annotations

import click

from daflow_cli.common import common_options, output_path, print_json, scheduler_option


@click.command()
@click.option("--truth", required=True, type=click.Path(dir_okay=False), help="Truth state file.")
@click.option("--forecast", required=True, type=click.Path(dir_okay=False), help="Forecast or analysis (ensemble or single).")
@click.option("--obs", type=click.Path(dir_okay=False), help="Observations: split the RMSE into observed / unobserved points.")
@click.option("--var", "variables", multiple=True, help="Score only this variable (repeatable).")
@click.option("--burn-in", type=click.IntRange(min=0), default=0, show_default=True, help="Leading common times left out of the time means.")
@click.option("--mask-nonfinite", is_flag=True,
              help="Leave points where the truth or a member is NaN/Inf out of every metric (default: such values are an error, exit 65).")
@click.option("-o", "--output", type=output_path(dir_okay=False), help="Scores NetCDF file.")
@click.option("--csv", "csv_path", type=output_path(dir_okay=False), help="Per-time scores as CSV.")
@click.option("--plot", type=output_path(dir_okay=False), help="PNG of errors over time, rank histograms and spectra.")
@click.option("--json", "as_json", is_flag=True, help="Print the time-averaged figures as one JSON object on stdout.")
@scheduler_option
@common_options
def score(truth, forecast, obs, variables, burn_in, mask_nonfinite, output, csv_path, plot, as_json, scheduler):
    """Verify FORECAST against TRUTH: RMSE, bias, spread, CRPS, rank histogram, ACC, spectra."""
    from daflow.io.contract import open_dataset, write_dataset
    from daflow.score.report import print_table, write_csv
    from daflow.parallel import dask_scheduler
    from daflow.score.verify import summary, verify

    kinds = ("state", "analysis")
    with dask_scheduler(scheduler):
        scores = verify(open_dataset(truth, kinds), open_dataset(forecast, kinds),
                        open_dataset(obs, ("observations",), dims=("obs",)) if obs else None,
                        burn_in=burn_in, variables=variables, names=(truth, forecast, obs),
                        mask_nonfinite=mask_nonfinite)
    if output:
        write_dataset(scores, output, "scores")
    if csv_path:
        write_csv(scores, csv_path)
    if plot:
        from daflow.score.plots import plot_scores

        plot_scores(scores, plot)
    if as_json:
        print_json(summary(scores))
    elif not output:
        print_table(summary(scores))
