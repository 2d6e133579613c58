"""daflow train: fit the generative (STORM-like) diffusion model to a state series."""
from __future__ import annotations

import click

from daflow_cli.common import common_options, print_json


@click.command()
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="Truth/state series (time, [level,] y, x) to learn from.")
@click.option("--var", "variable", help="Variable to model [the only gridded one].")
@click.option("--history", required=True, type=click.IntRange(min=1), help="K: frames of context before the target frame.")
@click.option("--epochs", required=True, type=click.IntRange(min=1), help="Total number of epochs (with --resume: including those done).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="TOML with [architecture] (patch, width, depth, heads, tile, target), [normalisation] (predict = \"state\" or "
                   "\"increment\") and [training] (batch_size, learning_rate, ...).")
@click.option("--resume", is_flag=True, help="Continue the training stored in MODEL_DIR.")
@click.option("-o", "--output", "model_dir", required=True, type=click.Path(file_okay=False), help="Model directory (safetensors + JSON).")
@click.option("--json", "as_json", is_flag=True, help="Print the epochs' losses as one JSON object on stdout.")
@common_options
def train(data, variable, history, epochs, config_file, resume, model_dir, as_json):
    """Train the spatio-temporal diffusion transformer on DATA; checkpoint after every epoch.

    Under `torchrun --nproc_per_node P` the same command trains data-parallel.
    """
    from daflow.api import train as run

    config = run(data, history, epochs, model_dir, var=variable, config=config_file, resume=resume)
    if as_json:
        print_json({"epochs": config["training"]["epoch"], "losses": config["training"]["losses"]})
