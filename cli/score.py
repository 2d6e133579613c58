"""daflow score: verification of a forecast or analysis against a truth, or against observations."""
from __future__ import annotations

import click

from daflow_cli.common import common_options, given_flags, output_path, print_json, scheduler_option


@click.command()
@click.option("--truth", type=click.Path(dir_okay=False), help="Truth state file (without it: verify against --obs, O-F per platform).")
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
    """Verify FORECAST against TRUTH: RMSE, bias, spread, CRPS, rank histogram, ACC, spectra.

    Without --truth, against the reports of --obs: count, bias, RMSE and standard deviation of
    observation minus forecast per platform, variable and pressure band (--csv: one row per report;
    --plot: a map of the departures).
    """
    from daflow.io.contract import write_dataset

    if truth is None:
        if obs is None:
            raise click.UsageError("give --truth, or --obs to verify against observations")
        given = given_flags("burn_in", "mask_nonfinite", "scheduler")
        if given:
            raise click.UsageError(f"{', '.join(given)}: verification against a truth only (give --truth)")
        from daflow.api import departures, summary
        from daflow.score import obsspace

        rows = departures(forecast, obs, var=variables)
        figures = summary(rows)
        if csv_path or plot:
            table = rows.to_dataframe()
            if csv_path:
                obsspace.write_departures_csv(table, csv_path)
            if plot:
                obsspace.plot_departures(table, plot, title=f"O - F of {forecast}")
        if output:
            write_dataset(rows, output, "scores")
        if as_json:
            print_json(figures)
        elif not output:
            obsspace.print_summary(figures)
        return
    from daflow.api import score as run, summary
    from daflow.score.report import print_table, write_csv

    scores = run(truth, forecast, obs, var=variables, burn_in=burn_in, scheduler=scheduler, mask_nonfinite=mask_nonfinite)
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
