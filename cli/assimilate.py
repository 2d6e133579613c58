"""daflow assimilate: one analysis, or cycling with the model stored in the initial ensemble."""
from __future__ import annotations

import click

from daflow.da import FILTERS
from daflow_cli.common import common_options, output_path

METHODS = [*FILTERS, "storm"]  # the filter registry, plus sampling from a trained generative model


@click.command()
@click.option("--method", required=True, type=click.Choice(METHODS), help="Analysis scheme.")
@click.option("--obs", "obs_path", required=True, type=click.Path(dir_okay=False), help="Observation file.")
@click.option("--init", type=click.Path(dir_okay=False), help="Cycle: start from this ensemble, forecast between observation times.")
@click.option("--background", type=click.Path(dir_okay=False), help="One analysis of this background's last frame at its time.")
@click.option("--inflation", type=click.FloatRange(min=1), help="Multiplicative inflation of the background anomalies [1].")
@click.option("--rtps", type=click.FloatRange(0, 1), help="Relaxation to prior spread, alpha in [0, 1] [0].")
@click.option("--loc-radius", type=click.FloatRange(min=0, min_open=True),
              help="[letkf] Localisation radius: grid units, or km on lat/lon grids [4].")
@click.option("--rotate", is_flag=True, default=None, help="[etkf, enkf-n] Random mean-preserving rotation of the square root.")
@click.option("--xn", type=click.FloatRange(min=0, min_open=True),
              help="[enkf-n] Certainty of the inflation hyperprior, DAPPER's xN (> 1 for nearly linear systems) [1].")
@click.option("--climatology", type=click.Path(dir_okay=False), help="[oi] State file whose time series gives the covariance B.")
@click.option("--b-std", type=click.FloatRange(min=0, min_open=True),
              help="[oi --background] Background error std of a parametric B (units of the variable) [t2m: 2 K].")
@click.option("--b-length", type=click.FloatRange(min=0, min_open=True), help="[oi --background] Correlation length of B in km [t2m: 150].")
@click.option("--b-correlation", type=click.Choice(["gaussian", "soar"]), help="[oi --background] Correlation function of B [gaussian].")
@click.option("--qc-k", type=click.FloatRange(min=0),
              help="Background check of every method: observations with |O-B| > k sqrt(so^2 + sb^2) (robustly scaled) "
                   "are not assimilated, flagged qc = 6; 0 turns it off [5].")
@click.option("--orography", type=click.Path(dir_okay=False),
              help="[oi --background] Model orography (m, or geopotential z) for the 2 m temperature lapse-rate correction.")
@click.option("--save-background", is_flag=True, help="[--init] Also write the background before each analysis.")
@click.option("--checkpoint", type=click.Path(file_okay=False), help="[storm] Trained model directory (daflow train).")
@click.option("--members", type=click.IntRange(min=1), default=1, show_default=True, help="[storm] Posterior samples to draw.")
@click.option("--guidance", type=click.Choice(["sda", "dps"]), default="sda", show_default=True, help="[storm] Likelihood guidance.")
@click.option("--gamma", type=click.FloatRange(min=0), default=1e-2, show_default=True, help="[storm] SDA gamma: variance gamma sigma^2 added to R.")
@click.option("--sample-steps", type=click.IntRange(min=1), default=24, show_default=True, help="[storm] Steps of the diffusion sampler.")
@click.option("--history-inflation", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="[storm] Each member's history gets a smooth random field of this RMS (in data standard deviations) "
                   "before every sampling: additive inflation for cycling.")
@click.option("--ensf-steps", type=click.IntRange(min=1), help="[ensf] Reverse-time Euler-Maruyama steps N_t [100].")
@click.option("--eps-a", type=click.FloatRange(0, 1, min_open=True, max_open=True), help="[ensf] alpha_1 = eps_a [0.05].")
@click.option("--eps-b", type=click.FloatRange(0, 1, max_open=True), help="[ensf] beta_0^2 = eps_b, the prior kernel variance [0.1].")
@click.option("--score", type=click.Choice(["mixture", "paired"]), help="[ensf] Prior score: member-paired (published) or ensemble mixture [paired].")
@click.option("--damping/--no-damping", default=None, help="[ensf] Likelihood damping h(t) = 1 - t [on].")
@click.option("--truncate", type=click.FloatRange(0, 1, max_open=True),
              help="[ensf] Stop the reverse SDE at pseudo-time T (published heuristic) [0].")
@click.option("--spread-reset", is_flag=True, default=None, help="[ensf] Reset the analysis spread to the background's (published heuristic).")
@click.option("--inpaint", type=click.Choice(["none", "biharmonic", "navier-stokes", "telea", "dct-tv", "oi"]),
              help="[ensf] Fill unobserved grid points, then a second pass [biharmonic when a 2-D grid is partly observed].")
@click.option("--sequence-parallel", type=click.IntRange(min=1), default=1, show_default=True,
              help="[storm] P: under torchrun, split every window's tokens across P processes (rank 0 writes).")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True)
@click.option("--seed", type=int, help="Seed of the random draws (enkf perturbations, etkf rotations).")
@click.option("-o", "--output", required=True, type=output_path(dir_okay=False), help="Output analysis file.")
@common_options
def assimilate(method, obs_path, init, background, inflation, rtps, loc_radius, rotate, xn, climatology,
               b_std, b_length, b_correlation, qc_k, orography, save_background, checkpoint, members, guidance, gamma,
               sample_steps, history_inflation, ensf_steps, eps_a, eps_b,
               score, damping, truncate, spread_reset, inpaint, sequence_parallel, dtype, seed, output):
    """Assimilate observations with OI, the stochastic EnKF, the ETKF, the LETKF, the EnSF or STORM.

    With --init, cycle through every observation time; with --background, analyse once. The
    output holds the analysis ensemble and per-observation O-B, O-A and H(x) mean and spread.
    """
    import torch

    from daflow.da.cycle import assimilate_files
    from daflow.io.contract import write_dataset

    if (init is None) == (background is None):
        raise click.UsageError("give exactly one of --init (cycling) and --background (one analysis)")
    if (method == "storm") != (checkpoint is not None):
        raise click.UsageError("--checkpoint is needed by, and only by, --method storm")
    if method == "storm":
        from daflow.nn.generative import assimilate as generative_assimilate
        from daflow.nn.sequence import writes_output

        ds = generative_assimilate(checkpoint, obs_path, members, background=background, init=init, seed=seed,
                                   guidance=guidance, gamma=gamma, sample_steps=sample_steps,
                                   history_inflation=history_inflation, sequence_parallel=sequence_parallel)
        if writes_output():
            write_dataset(ds, output, "analysis")
        return
    if save_background and init is None:
        raise click.UsageError("--save-background goes with --init")
    if climatology is not None and method != "oi":
        raise click.UsageError("--climatology goes with --method oi")
    if method == "oi" and climatology is None and init is not None:
        raise click.UsageError("cycling OI (--init) needs --climatology; a parametric B analyses one --background")
    options = dict(inflation=inflation, rtps=rtps, loc_radius=loc_radius, rotate=rotate, xn=xn, seed=seed,
                   ensf_steps=ensf_steps, eps_a=eps_a, eps_b=eps_b, score=score, damping=damping,
                   truncate=truncate, spread_reset=spread_reset, inpaint=inpaint, b_std=b_std, b_length=b_length,
                   b_correlation=b_correlation, qc_k=qc_k, orography=orography)
    try:
        ds = assimilate_files(method, obs_path, init=init, background=background, climatology=climatology,
                              save_background=save_background, dtype=getattr(torch, dtype), **options)
    except ValueError as err:  # an option the method does not take
        raise click.UsageError(str(err)) from None
    write_dataset(ds, output, "analysis")
