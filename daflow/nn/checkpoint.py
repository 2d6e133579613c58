"""Checkpoints as safetensors + JSON (DESIGN.md): nothing in a checkpoint can run code when loaded.

A model directory holds
- ``config.json``: format tag, architecture, data description (variable, dims, grid, levels,
  time step, per-level normalisation mean/std) and the training state (epoch, losses, options);
- ``model.safetensors``: the network weights;
- ``training.safetensors``: optimizer moments and the training random-generator state (for --resume).
The safetensors files carry the epoch in their metadata; a loader refuses files whose epochs differ
from the JSON's, as it refuses anything that is not safetensors, with a DataError (exit 65).
The architecture is checked against :data:`ARCH_BOUNDS` and a parameter budget before anything is
allocated (a JSON asking for depth 10^9 is refused at once, not after filling the memory).
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
MAX_CONFIG_BYTES = 64 * 2**20
# Sane bounds of each architecture field (inclusive), far beyond anything trained on one node.
ARCH_BOUNDS = {"levels": (1, 1024), "ny": (1, 16384), "nx": (1, 16384), "history": (1, 256), "target": (1, 256),
               "patch": (1, 64), "width": (2, 8192), "depth": (1, 128), "heads": (1, 256), "tile": (0, 1 << 20)}
ARCH_FLAGS = ("wrap",)
MAX_PARAMETERS = 2 * 10**9  # 8 GB of float32 weights
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


def checked_architecture(options: dict, source: str | os.PathLike | None) -> Architecture:
    """An :class:`Architecture` from ``options`` after checking every field against :data:`ARCH_BOUNDS`,
    width against heads, and the parameter count (about depth x 12 width^2) against :data:`MAX_PARAMETERS`."""
    if not isinstance(options, dict):
        raise DataError(source, "the architecture is not a table of settings")
    unknown = sorted(set(options) - set(ARCH_BOUNDS) - set(ARCH_FLAGS))
    if unknown:
        raise DataError(source, f"unknown architecture setting(s) {', '.join(map(str, unknown))}")
    for key, value in options.items():
        if key in ARCH_FLAGS:
            if not isinstance(value, bool):
                raise DataError(source, f"architecture {key} = {str(value)[:40]} is not true or false")
            continue
        low, high = ARCH_BOUNDS[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise DataError(source, f"architecture {key} = {str(value)[:40]} is not a whole number in [{low}, {high}]")
    missing = sorted({"levels", "ny", "nx", "history"} - set(options))
    if missing:
        raise DataError(source, f"the architecture lacks {', '.join(missing)}")
    arch = Architecture(**options)
    if arch.width % arch.heads:
        raise DataError(source, f"architecture width {arch.width} is not a multiple of heads {arch.heads}")
    parameters = arch.depth * 12 * arch.width**2 + 2 * arch.levels * arch.patch**2 * arch.width
    if parameters > MAX_PARAMETERS:
        raise DataError(source, f"the architecture has about {parameters:.2g} parameters ({4 * parameters / 2**30:.0f} GiB), "
                                f"more than the limit {MAX_PARAMETERS:.0e}")
    return arch


def read_config(directory: str | os.PathLike) -> dict:
    """The checkpoint's JSON config; InputMissing if the directory is absent, DataError if not a checkpoint."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputMissing(directory, "no such checkpoint directory")
    path = directory / CONFIG
    if not path.exists():
        raise DataError(directory, f"not a checkpoint: no {CONFIG}")
    if not path.is_file():  # a FIFO would block the read forever
        raise DataError(path, "is not a regular file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise DataError(path, f"is {path.stat().st_size} bytes, too large for a checkpoint config")
    try:
        config = json.loads(path.read_text())
    except RecursionError:
        raise DataError(path, "not a checkpoint config (JSON nested too deeply)") from None
    except (OSError, ValueError) as err:
        raise DataError(path, f"not a JSON checkpoint config ({err})") from None
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
        arch = checked_architecture(config["architecture"], Path(directory) / CONFIG)
        denoiser = Denoiser(arch)
        denoiser.load_state_dict(load_tensors(directory, WEIGHTS, config))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise DataError(Path(directory) / WEIGHTS, f"weights do not match the config ({str(err).splitlines()[0]})") from None
    return denoiser.eval(), config
