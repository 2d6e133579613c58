"""daflow assimilate: one analysis, or cycling with the model stored in the initial ensemble."""
from __future__ import annotations

import click

from daflow.da import METHODS
from daflow_cli.common import FiniteFloatRange, common_options, output_path



@click.command()
@click.option("--method", required=True, type=click.Choice(METHODS), help="Analysis scheme.")
@click.option("--obs", "obs_path", required=True, type=click.Path(dir_okay=False), help="Observation file.")
@click.option("--init", type=click.Path(dir_okay=False), help="Cycle: start from this ensemble, forecast between observation times.")
@click.option("--background", type=click.Path(dir_okay=False), help="One analysis of this background's last frame at its time.")
@click.option("--inflation", type=FiniteFloatRange(min=1), help="Multiplicative inflation of the background anomalies [1].")
@click.option("--rtps", type=FiniteFloatRange(0, 1), help="Relaxation to prior spread, alpha in [0, 1] [0].")
@click.option("--loc-radius", type=FiniteFloatRange(min=0, min_open=True),
              help="[letkf] Localisation radius: grid units, or km on lat/lon grids [4].")
@click.option("--rotate", is_flag=True, default=None, help="[etkf, enkf-n] Random mean-preserving rotation of the square root.")
@click.option("--xn", type=FiniteFloatRange(min=0, min_open=True),
              help="[enkf-n] Certainty of the inflation hyperprior, DAPPER's xN (> 1 for nearly linear systems) [1].")
@click.option("--climatology", type=click.Path(dir_okay=False),
              help="[oi, 3dvar, 4dvar] State file whose time series gives the covariance B.")
@click.option("--b-scale", type=FiniteFloatRange(min=0, min_open=True), help="[3dvar, 4dvar] Factor on B (DAPPER's xB) [1].")
@click.option("--b-std", type=FiniteFloatRange(min=0, min_open=True),
              help="[oi --background, 3dvar, 4dvar] Background error std of a parametric B (units of the variable) "
                   "[oi, t2m: 2 K].")
@click.option("--b-length", type=FiniteFloatRange(min=0, min_open=True),
              help="[oi --background, 3dvar, 4dvar] Correlation length of a parametric B: km on lat/lon and point grids, "
                   "else grid units [oi, t2m: 150 km].")
@click.option("--b-correlation", type=click.Choice(["gaussian", "soar"]),
              help="[oi --background, 3dvar, 4dvar] Correlation function of a parametric B [gaussian].")
@click.option("--minimizer", type=click.Choice(["cg", "lbfgs"]),
              help="[3dvar, 4dvar] Incremental Gauss-Newton with conjugate gradients, or L-BFGS [cg].")
@click.option("--outer-loops", type=click.IntRange(min=1), help="[3dvar, 4dvar] Outer (linearisation) loops at most, stopping once converged [10].")
@click.option("--inner-iterations", type=click.IntRange(min=1), help="[3dvar, 4dvar] Iterations per outer loop [100].")
@click.option("--window", type=click.IntRange(min=1), help="[4dvar] Observation times per assimilation window [5].")
@click.option("--qc-k", type=FiniteFloatRange(min=0),
              help="Background check of every method: observations with |O-B| > k sqrt(so^2 + sb^2) (robustly scaled) "
                   "are not assimilated, flagged qc = 6; 0 turns it off [10 for the ensemble and variational methods, 5 for the surface OI].")
@click.option("--orography", type=click.Path(dir_okay=False),
              help="[oi --background] Model orography (m, or geopotential z) for the 2 m temperature lapse-rate correction.")
@click.option("--save-background", is_flag=True, help="[--init] Also write the background before each analysis.")
@click.option("--checkpoint", type=click.Path(file_okay=False), help="[storm] Trained model directory (daflow train).")
@click.option("--members", type=click.IntRange(min=1), help="[storm] Posterior samples to draw [1].")
@click.option("--guidance", type=click.Choice(["mmps", "sda", "dps"]),
              help="[storm] Likelihood guidance: MMPS (Tweedie covariance), SDA (gamma) or DPS [mmps].")
@click.option("--churn", type=FiniteFloatRange(min=0), help="[storm] EDM churn S_churn: stochastic sampling steps [0].")
@click.option("--cg-iterations", type=click.IntRange(min=1), help="[storm] MMPS conjugate-gradient iterations at most [8].")
@click.option("--lag", type=click.IntRange(min=0),
              help="[storm] Frames of the model's T-frame window before each analysis time, re-analysed with the "
                   "window's observations (reanalysis); the observations of the other T-1-lag frames, after it, "
                   "correct the analysis (look-ahead) [0].")
@click.option("--gamma", type=FiniteFloatRange(min=0), help="[storm] SDA gamma: variance gamma sigma^2 added to R [0.01].")
@click.option("--sample-steps", type=click.IntRange(min=1), help="[storm] Steps of the diffusion sampler [24].")
@click.option("--history-inflation", type=FiniteFloatRange(min=0),
              help="[storm] Each member's history gets a smooth random field of this RMS (in data standard deviations) "
                   "before every sampling: additive inflation for cycling [0].")
@click.option("--ensf-steps", type=click.IntRange(min=1), help="[ensf] Reverse-time Euler-Maruyama steps N_t [100].")
@click.option("--eps-a", type=FiniteFloatRange(0, 1, min_open=True, max_open=True), help="[ensf] alpha_1 = eps_a [0.05].")
@click.option("--eps-b", type=FiniteFloatRange(0, 1, max_open=True), help="[ensf] beta_0^2 = eps_b, the prior kernel variance (standardised) [0.6].")
@click.option("--score", type=click.Choice(["mixture", "paired"]), help="[ensf] Prior score: member-paired (published) or ensemble mixture [paired].")
@click.option("--sampler", type=click.Choice(["sde", "kernel"]),
              help="[ensf] Reverse SDE with the damped likelihood (published), or exact ancestral sampling of each member's "
                   "kernel posterior (linear H; Gauss-Newton otherwise; needs --score paired) [sde].")
@click.option("--damping/--no-damping", default=None, help="[ensf] Likelihood damping h(t) = 1 - t [on].")
@click.option("--truncate", type=FiniteFloatRange(0, 1, max_open=True),
              help="[ensf] Stop the reverse SDE at pseudo-time T (published heuristic) [0].")
@click.option("--spread-reset", is_flag=True, default=None, help="[ensf] Reset the analysis spread to the background's (published heuristic).")
@click.option("--inpaint", type=click.Choice(["none", "biharmonic", "navier-stokes", "telea", "dct-tv", "oi"]),
              help="[ensf] Fill unobserved grid points, then a second pass [biharmonic when a 2-D grid is partly observed].")
@click.option("--kernel", type=click.Choice(["blur", "preserve"]),
              help="[ensf] Prior kernel: members blurred by eps_b, or shrunk to their mean by sqrt(1 - eps_b) first "
                   "so the kernel density keeps the ensemble variance (Liu & West 2001) [preserve].")
@click.option("--adaptive-inflation/--no-adaptive-inflation", default=None,
              help="[ensf] Inflate the background by the innovation excess over the ensemble variance [on].")
@click.option("--max-inflation", type=FiniteFloatRange(min=1), help="[ensf] Largest adaptive anomaly inflation, and 1/this the smallest [3].")
@click.option("--scale-eps-b/--no-scale-eps-b", default=None,
              help="[ensf] Use eps_b times the observed fraction of the state (eps_b is the value at full observation) [on].")
@click.option("--sequence-parallel", type=click.IntRange(min=1),
              help="[storm] P: under torchrun, split every window's tokens across P processes (rank 0 writes) [1].")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True,
              help="Precision of the analysis arithmetic.")
@click.option("--seed", type=int, help="Seed of the random draws (enkf perturbations, etkf rotations).")
@click.option("-o", "--output", required=True, type=output_path(dir_okay=False), help="Output analysis file.")
@common_options
def assimilate(method, obs_path, init, background, inflation, rtps, loc_radius, rotate, xn, climatology,
               b_scale, b_std, b_length, b_correlation, minimizer, outer_loops, inner_iterations, window, qc_k, orography,
               save_background, checkpoint, members, guidance, churn, cg_iterations, lag, gamma, sample_steps, history_inflation,
               ensf_steps, eps_a, eps_b,
               score, sampler, damping, truncate, spread_reset, inpaint, kernel, adaptive_inflation, max_inflation, scale_eps_b, sequence_parallel,
               dtype, seed, output):
    """Assimilate observations with OI, 3D-Var, 4D-Var, the stochastic EnKF, the ETKF, the LETKF, the EnKF-N, the EnSF or STORM.

    With --init, cycle through every observation time; with --background, analyse once. The
    output holds the analysis ensemble and per-observation O-B, O-A and H(x) mean and spread.
    """
    from daflow.api import assimilate as run
    from daflow.io.contract import write_dataset
    from daflow.nn.sequence import writes_output

    if (init is None) == (background is None):
        raise click.UsageError("give exactly one of --init (cycling) and --background (one analysis)")
    ds = run(method, obs_path, init=init, background=background, climatology=climatology, save_background=save_background,
             checkpoint=checkpoint, dtype=dtype, seed=seed, inflation=inflation, rtps=rtps, loc_radius=loc_radius, rotate=rotate,
             xn=xn, b_scale=b_scale, b_std=b_std, b_length=b_length, b_correlation=b_correlation, minimizer=minimizer,
             outer_loops=outer_loops, inner_iterations=inner_iterations, window=window, qc_k=qc_k, orography=orography,
             members=members, guidance=guidance, churn=churn, cg_iterations=cg_iterations, lag=lag,
             gamma=gamma, sample_steps=sample_steps, history_inflation=history_inflation,
             sequence_parallel=sequence_parallel, ensf_steps=ensf_steps, eps_a=eps_a, eps_b=eps_b, score=score, sampler=sampler, damping=damping,
             truncate=truncate, spread_reset=spread_reset, inpaint=inpaint, kernel=kernel,
             adaptive_inflation=adaptive_inflation, max_inflation=max_inflation, scale_eps_b=scale_eps_b)
    if writes_output():  # rank 0 only under torchrun (storm --sequence-parallel)
        write_dataset(ds, output, "analysis")
