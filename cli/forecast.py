"""daflow forecast: run a model from a random start or continue any state file."""
from __future__ import annotations

import click

from daflow.models import MODEL_NAMES
from daflow_cli.common import FiniteFloatRange, common_options, output_path, parse_pairs, scheduler_option


@click.command()
@click.option("--init", required=True, type=click.Path(dir_okay=False), metavar="FILE|random",
              help="State file to continue (its last frame), or 'random'.")
@click.option("--model", "model_name", type=click.Choice(MODEL_NAMES),
              help="Model (with --init random; checked against an init file; storm needs --checkpoint).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Model parameter, e.g. dim=40 (repeatable; overrides the file's).")
@click.option("--members", type=click.IntRange(min=1), help="Ensemble size: independent random states, or copies of a single state.")
@click.option("--perturb", type=FiniteFloatRange(min=0), default=0.0, show_default=True, help="Std of Gaussian noise added to the initial state(s).")
@click.option("--spinup", type=click.IntRange(min=0), help="Steps run before the first frame [default: 1000 with --init random, else 0].")
@click.option("--dt", type=FiniteFloatRange(min=0, min_open=True), help="Time step [default: the file's, or the model's].")
@click.option("--steps", type=click.IntRange(min=0), default=0, show_default=True, help="Number of steps after the first frame.")
@click.option("--output-every", type=click.IntRange(min=1), default=1, show_default=True, help="Keep every K-th step.")
@click.option("--start", metavar="ISO-8601", help="Calendar time of the first frame (default: model time 0 or the file's).")
@click.option("--checkpoint", type=click.Path(file_okay=False), help="[--model storm] Trained model directory (daflow train).")
@click.option("--sample-steps", type=click.IntRange(min=1), help="[--model storm] Steps of the diffusion sampler [24].")
@click.option("--sequence-parallel", type=click.IntRange(min=1),
              help="[--model storm] P: under torchrun, split every window's tokens across P processes (rank 0 writes) [1].")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), help="Precision [default: the model's; float32 for SQG].")
@click.option("--seed", type=int, help="Seed of the random draws.")
@click.option("--split", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run the members in this many dask tasks (local cores, or the --scheduler cluster).")
@scheduler_option
@click.option("-o", "--output", required=True, type=output_path(dir_okay=False), help="Output state file.")
@common_options
def forecast(init, model_name, params, members, perturb, spinup, dt, steps, output_every, start, checkpoint, sample_steps,
             sequence_parallel, dtype, seed, split, scheduler, output):
    """Integrate a model (Lorenz-63, Lorenz-96, ...) batched over members; write a state file.

    The first frame is the initial state; model name, parameters and dt are stored in the file so
    that `--init FILE` continues a run without repeating them.
    """
    from daflow.api import forecast as run
    from daflow.io.contract import write_dataset
    from daflow.nn.sequence import writes_output

    ds = run(init, model=model_name, param=parse_pairs(params, "--param"), members=members, perturb=perturb, spinup=spinup, dt=dt,
             steps=steps, output_every=output_every, start=start, checkpoint=checkpoint, sample_steps=sample_steps,
             sequence_parallel=sequence_parallel, dtype=dtype, seed=seed, split=split, scheduler=scheduler)
    if writes_output():  # rank 0 only under torchrun (storm --sequence-parallel)
        write_dataset(ds, output, "state")
