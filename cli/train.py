"""daflow train: fit the generative (STORM-like) diffusion model to a state series."""
from __future__ import annotations

import click

from daflow_cli.common import common_options, output_path, print_json


@click.command()
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="Truth/state series (time, [level,] y, x) to learn from.")
@click.option("--var", "variable", help="Variable to model [the only gridded one].")
@click.option("--history", required=True, type=click.IntRange(min=1), help="K: frames of context before the target frame.")
@click.option("--epochs", required=True, type=click.IntRange(min=1), help="Total number of epochs (with --resume: including those done).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="TOML with [architecture] (patch, width, depth, heads, tile, target), [normalisation] (predict = \"state\" or "
                   "\"increment\"; centre = \"climate\" or \"history\") and [training] (batch_size, learning_rate, ...).")
@click.option("--resume", is_flag=True, help="Continue the training stored in MODEL_DIR.")
@click.option("-o", "--output", "model_dir", required=True, type=output_path(file_okay=False), help="Model directory (safetensors + JSON).")
@click.option("--seed", type=int, help="Seed of the initial weights, data order and noises [the config's [training] seed, or 0].")
@click.option("--sequence-parallel", type=click.IntRange(min=1), default=1, show_default=True,
              help="P: under torchrun, split every window's tokens across groups of P processes (R/P data-parallel groups).")
@click.option("--json", "as_json", is_flag=True, help="Print the epochs' losses as one JSON object on stdout.")
@common_options
def train(data, variable, history, epochs, config_file, resume, model_dir, seed, sequence_parallel, as_json):
    """Train the spatio-temporal diffusion transformer on DATA; checkpoint after every epoch.

    Under `torchrun --nproc_per_node R` the same command trains data-parallel, or with
    --sequence-parallel P in R/P data-parallel groups of P processes that split each window.
    """
    from daflow.api import train as run

    config = run(data, history, epochs, model_dir, var=variable, config=config_file, resume=resume, seed=seed,
                 sequence_parallel=sequence_parallel)
    if as_json:
        print_json({"epochs": config["training"]["epoch"], "losses": config["training"]["losses"]})
