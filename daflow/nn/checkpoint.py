"""Checkpoints as safetensors + JSON (DESIGN.md): nothing in a checkpoint can run code when loaded.

A model directory holds
- ``config.json``: format tag, architecture, data description (variable, dims, grid, levels,
  time step, per-level normalisation mean/std) and the training state (epoch, losses, options);
- ``model.safetensors``: the network weights;
- ``training.safetensors``: optimizer moments and the training random-generator state (for --resume).
The safetensors files carry the epoch in their metadata; a loader refuses files whose epochs differ
from the JSON's, as it refuses anything that is not safetensors, with a DataError (exit 65).
Files are written to temporary names and renamed, the JSON last.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from daflow.errors import DataError, InputMissing, OutputError
from daflow.nn.diffusion import Denoiser
from daflow.nn.transformer import Architecture

FORMAT = "daflow-storm-1"
CONFIG, WEIGHTS, TRAINING = "config.json", "model.safetensors", "training.safetensors"


def save_checkpoint(directory: str | os.PathLike, denoiser: Denoiser, config: dict,
                    training_tensors: dict[str, torch.Tensor]) -> None:
    """Write weights, training state and ``config`` (which must hold ``training.epoch``)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"daflow": json.dumps({"format": FORMAT, "epoch": config["training"]["epoch"]})}  # one key: same bytes each time
        weights = {k: v.detach().contiguous() for k, v in denoiser.state_dict().items()}
        for name, tensors in ((WEIGHTS, weights), (TRAINING, training_tensors)):
            save_file(tensors, directory / f".{name}.tmp", metadata=meta)
        (directory / f".{CONFIG}.tmp").write_text(json.dumps({"format": FORMAT, **config}, indent=1))
        for name in (WEIGHTS, TRAINING, CONFIG):
            os.replace(directory / f".{name}.tmp", directory / name)
    except OSError as err:
        raise OutputError(directory, f"cannot write the checkpoint ({err.strerror or err})") from err


def read_config(directory: str | os.PathLike) -> dict:
    """The checkpoint's JSON config; InputMissing if the directory is absent, DataError if not a checkpoint."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputMissing(directory, "no such checkpoint directory")
    try:
        config = json.loads((directory / CONFIG).read_text())
    except FileNotFoundError:
        raise DataError(directory, f"not a checkpoint: no {CONFIG}") from None
    except (OSError, ValueError) as err:
        raise DataError(directory / CONFIG, f"not a JSON checkpoint config ({err})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise DataError(directory / CONFIG, f"not a {FORMAT} checkpoint config")
    return config


def load_tensors(directory: str | os.PathLike, name: str, config: dict) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file of the checkpoint, checked against the config's epoch."""
    path = Path(directory) / name
    if not path.is_file():
        raise DataError(path.parent, f"not a checkpoint: no {name}")
    try:
        tensors = load_file(path)
        with open(path, "rb") as f:  # metadata: the JSON header after its 8-byte length
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    except (SafetensorError, OSError, ValueError) as err:
        raise DataError(path, f"not a safetensors file ({str(err).splitlines()[0]})") from None
    epoch = json.loads(header.get("__metadata__", {}).get("daflow", "{}")).get("epoch")
    if epoch != config["training"]["epoch"]:
        raise DataError(path, f"written at epoch {epoch}, but {CONFIG} is at epoch {config['training']['epoch']}")
    return tensors


def load_denoiser(directory: str | os.PathLike) -> tuple[Denoiser, dict]:
    """(denoiser in eval mode, config) from a checkpoint directory."""
    config = read_config(directory)
    try:
        arch = Architecture(**config["architecture"])
        denoiser = Denoiser(arch)
        denoiser.load_state_dict(load_tensors(directory, WEIGHTS, config))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise DataError(Path(directory) / WEIGHTS, f"weights do not match the config ({str(err).splitlines()[0]})") from None
    return denoiser.eval(), config
