"""Training the denoiser by denoising score matching on windows of a state series (``daflow train``).

Frames are normalised per level with the mean and standard deviation of the training period
(or, with ``[normalisation] centre = "history"``, each window about the domain mean of its last
history frame), and the network learns either the target state or its increment from the last
history frame (``[normalisation] predict`` of the TOML config, :mod:`daflow.nn.normalisation`);
both are stored in the checkpoint. The series is split by time: the first (1 - validation_fraction) of
the frames train, the rest validate; a window is K history frames followed by T target frames,
never crossing the split. Each epoch draws a permutation of the training windows, and for each
batch the noise levels and noises, from one torch generator seeded by ``seed``; the generator
state, the optimizer moments and the weights are checkpointed after every epoch, so that
``--resume`` continues bit for bit (on CPU) as if never stopped.

On a global latitude-longitude grid (:func:`sphere`) the architecture wraps in longitude
(:mod:`daflow.nn.transformer`) and the loss is weighted by cos(latitude).

Hybrid parallel: under ``torchrun --nproc_per_node R`` with ``sequence_parallel`` = P, the R
processes form R / P data-parallel groups of P consecutive ranks (:mod:`daflow.nn.sequence`).
Every process draws the same batch and noises; data-parallel group g takes its share g of the
batch, and within the group each rank holds a contiguous slice of every window's tokens (the
attention sums its summaries over the group). Each process's gradient is then its slice's part
of its share's gradient; one all-reduce over all R processes (gloo on CPU, NCCL on GPU) sums
them, and the loss is scaled by R x share / batch so that the sum divided by R is the
single-process gradient of the whole batch: the same step, to round-off, whatever R and P.
Process 0 writes the checkpoints, which do not depend on R or P.
"""
from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from daflow.errors import DataError
from daflow.nn import checkpoint as ckpt
from daflow.nn.data import Series, check_matches, describe
from daflow.nn.diffusion import Denoiser, score_matching_loss
from daflow.nn.normalisation import CENTRE, PREDICT, Normalisation
from daflow.nn.sequence import SequenceGroup, new_groups
from daflow.nn.transformer import Architecture
from daflow.progress import track

ARCH_OPTIONS = ("target", "patch", "width", "depth", "heads", "tile")
DEFAULT_PREDICT = "state"  # the better in cycled ERA5 t2m (benchmarks/README.md); "increment" accumulates its errors
DEFAULT_CENTRE = "climate"


@dataclass(frozen=True)
class TrainingOptions:
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    validation_fraction: float = 0.1
    seed: int = 0
    history_noise: float = 0.0


def read_config_file(path: str | None) -> tuple[dict, dict, TrainingOptions]:
    """([architecture] options, [normalisation] {predict, centre}, [training] options) of a TOML file; DataError on unknown keys."""
    if path is None:
        return {}, {"predict": DEFAULT_PREDICT, "centre": DEFAULT_CENTRE}, TrainingOptions()
    try:
        config = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise DataError(path, f"not a readable TOML file ({err})") from None
    arch, norm, train = (config.pop(section, {}) for section in ("architecture", "normalisation", "training"))
    known = {f.name for f in fields(TrainingOptions)}
    unknown = sorted(set(config) | (set(arch) - set(ARCH_OPTIONS)) | (set(norm) - {"predict", "centre"}) | (set(train) - known))
    if unknown:
        raise DataError(path, f"unknown setting(s) {', '.join(unknown)}; [architecture] takes {', '.join(ARCH_OPTIONS)}, "
                        f"[normalisation] takes predict, centre, [training] takes {', '.join(sorted(known))}")
    norm = {"predict": norm.get("predict", DEFAULT_PREDICT), "centre": norm.get("centre", DEFAULT_CENTRE)}
    for key, allowed in (("predict", PREDICT), ("centre", CENTRE)):
        if norm[key] not in allowed:
            raise DataError(path, f"[normalisation] {key} = {norm[key]!r}; choose {' or '.join(allowed)}")
    for key, value in train.items():
        if not _allowed(key, value):
            raise DataError(path, f"[training] {key} = {str(value)[:40]} is not {TRAINING_BOUNDS[key][0]}")
    return arch, norm, TrainingOptions(**train)


TRAINING_BOUNDS = {  # [training] setting: (what it must be, test)
    "batch_size": ("a whole number >= 1", lambda v: isinstance(v, int) and v >= 1),
    "learning_rate": ("a number >= 0", lambda v: v >= 0),  # 0 keeps the initial network (a test uses it)
    "weight_decay": ("a number >= 0", lambda v: v >= 0),
    "grad_clip": ("a number > 0", lambda v: v > 0),
    "validation_fraction": ("a number in [0, 1)", lambda v: 0 <= v < 1),
    "seed": ("a whole number", lambda v: isinstance(v, int)),
    "history_noise": ("a number >= 0", lambda v: v >= 0),
}


def _allowed(key: str, value: object) -> bool:
    """A finite TOML number (not a boolean) that passes the setting's test."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return bool(TRAINING_BOUNDS[key][1](value))


def _check_same_config(config_file: str, config: dict, options: TrainingOptions, model_dir: str) -> None:
    """DataError when a config file given with resume differs from the one the checkpoint was trained with (resuming keeps that one)."""
    arch_options, norm_options, file_options = read_config_file(config_file)
    given = _settings(arch_options, norm_options, file_options)
    stored = _settings({k: config["architecture"].get(k) for k in arch_options},
                       {k: config["normalisation"].get(k, default) for k, default in (("predict", DEFAULT_PREDICT), ("centre", DEFAULT_CENTRE))},
                       options)
    changed = [f"{k} = {given[k]!r} (trained with {stored[k]!r})" for k in given if given[k] != stored[k]]
    if changed:
        raise DataError(config_file, f"differs from the configuration {model_dir} was trained with: {'; '.join(changed)}; "
                                     "resuming keeps that one (drop --config, or train a new model)")


def _settings(arch: dict, norm: dict, options: TrainingOptions) -> dict[str, object]:
    """{"[section] key": value} of a configuration, as a TOML file's settings are named."""
    return {**{f"[architecture] {k}": v for k, v in arch.items()}, **{f"[normalisation] {k}": v for k, v in norm.items()},
            **{f"[training] {f.name}": getattr(options, f.name) for f in fields(TrainingOptions)}}


def windows(frames: torch.Tensor, starts: torch.Tensor, history: int, target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """frames (member, time, C, ny, nx), starts (B, 2) of (member, time) -> history (B, K, ...), target (B, T, ...)."""
    offsets = torch.arange(history + target)
    window = frames[starts[:, :1], starts[:, 1:] + offsets]  # (B, K + T, C, ny, nx)
    return window[:, :history], window[:, history:]


def window_starts(members: int, first: int, last: int, length: int) -> torch.Tensor:
    """(n, 2) (member, time) starts of windows of ``length`` frames inside frames first..last-1."""
    t = torch.arange(first, max(first, last - length + 1))  # none when the period is shorter than a window
    return torch.cartesian_prod(torch.arange(members), t) if len(t) else torch.empty(0, 2, dtype=torch.long)


def distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group when run under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def parallel_groups(sequence_parallel: int = 1) -> tuple[int, int, SequenceGroup | None, int, int]:
    """(rank, world size, sequence group or None, data-parallel index, data-parallel groups); DataError if R % P."""
    rank, world = distributed()
    if world % sequence_parallel:
        raise DataError(None, f"{world} process(es) cannot form groups of --sequence-parallel {sequence_parallel}; "
                        f"run torchrun --nproc_per_node with a multiple of {sequence_parallel}")
    if world == 1:
        return rank, world, None, 0, 1
    sequence, data_rank, data_groups = new_groups(world, rank, sequence_parallel)
    return rank, world, sequence if sequence_parallel > 1 else None, data_rank, data_groups


def train(series: Series, history: int, epochs: int, model_dir: str, config_file: str | None = None,
          resume: bool = False, source=None, sequence_parallel: int = 1, seed: int | None = None) -> dict:
    """Train (or resume training) a denoiser on ``series``; returns the checkpoint config.

    ``seed`` (if given) replaces the config file's [training] seed: initial weights, data order, noises.
    """
    rank, world, sequence, data_rank, data_groups = parallel_groups(sequence_parallel)
    if resume:
        config = ckpt.read_config(model_dir)
        check_matches(series, config["data"], source, model_dir)
        if config["architecture"]["history"] != history:
            raise DataError(model_dir, f"trained with --history {config['architecture']['history']}, not {history}")
        options = TrainingOptions(**config["training"]["options"])
        if seed is not None and seed != options.seed:
            raise DataError(model_dir, f"trained with --seed {options.seed}, not {seed}")
        arch = ckpt.checked_architecture(config["architecture"], Path(model_dir) / ckpt.CONFIG)
        if config_file is not None:
            _check_same_config(config_file, config, options, model_dir)
    else:
        arch_options, norm_options, options = read_config_file(config_file)
        options = options if seed is None else replace(options, seed=seed)
        levels, ny, nx = series.frames.shape[2:]
        arch = ckpt.checked_architecture(dict(levels=levels, ny=ny, nx=nx, history=history, wrap=sphere(series) is not None,
                                              **arch_options), config_file)
    members, times = series.frames.shape[:2]
    split = times - max(1, round(options.validation_fraction * times)) if options.validation_fraction > 0 else times
    length = arch.history + arch.target
    if split < length:
        raise DataError(source, f"{split} training frames are fewer than a window of {length} (history + target)")
    train_starts = window_starts(members, 0, split, length)
    valid_starts = window_starts(members, split, times, length)

    if resume:
        norm = Normalisation.from_dict(config["normalisation"])
    else:
        norm = Normalisation.fit(series.frames[:, :split], **norm_options)
    frames = norm.normalise(torch.from_numpy(series.frames))  # (member, time, C, ny, nx), about mu; windows re-centred below

    torch.manual_seed(options.seed)  # initial weights
    denoiser = Denoiser(arch)
    try:
        denoiser.net.split(sequence)
    except ValueError as err:
        raise DataError(source, str(err)) from None
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    generator = torch.Generator().manual_seed(options.seed)
    done, losses = 0, []
    if resume:
        denoiser.load_state_dict(ckpt.load_tensors(model_dir, ckpt.WEIGHTS, config))
        state = ckpt.load_tensors(model_dir, ckpt.TRAINING, config)
        generator.set_state(state.pop("generator"))
        optimizer.load_state_dict(optimizer_state_dict(optimizer, state))
        done, losses = config["training"]["epoch"], config["training"]["losses"]

    area = sphere(series) if arch.wrap else None
    area = 1.0 if area is None else area
    batch = options.batch_size
    steps = math.ceil(len(train_starts) / batch)
    for epoch in range(done, epochs):
        denoiser.train()
        order = torch.randperm(len(train_starts), generator=generator)
        total = 0.0
        for i in track(range(steps), f"epoch {epoch + 1}/{epochs}", total=steps):
            chosen = train_starts[order[i * batch:(i + 1) * batch]]
            log_sigma = torch.randn(len(chosen), generator=generator)
            noise = torch.randn((len(chosen), arch.target, *frames.shape[2:]), generator=generator)
            perturbation = history_perturbation(len(chosen), frames.shape[2:], arch.patch, options.history_noise, generator)
            mine = slice(data_rank * len(chosen) // data_groups, (data_rank + 1) * len(chosen) // data_groups)  # this group's share
            hist, future = windows(frames, chosen[mine], arch.history, arch.target)
            # perturbed, then centred on the perturbed last frame, as next_frames does with history inflation
            hist, targ = norm.centred(hist + perturbation[mine], norm.targets(hist, future))
            loss = score_matching_loss(denoiser=denoiser, history=hist, target=targ, log_sigma_normal=log_sigma[mine],
                                       noise=noise[mine], area=area) * (world * hist.shape[0] / len(chosen))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:
                average_gradients(denoiser)
            torch.nn.utils.clip_grad_norm_(denoiser.parameters(), options.grad_clip)
            optimizer.step()
            total += float(loss.detach()) * len(chosen) / world / (world // data_groups)
        if world > 1:
            total_tensor = torch.tensor(total)
            dist.all_reduce(total_tensor)
            total = float(total_tensor)
        losses.append({"epoch": epoch + 1, "train": total / len(train_starts),
                       "validation": validation_loss(denoiser, frames, valid_starts, arch, norm, options.seed, area)})
        config = {
            "architecture": arch.to_dict(), "data": describe(series),
            "normalisation": norm.to_dict(),
            "training": {"epoch": epoch + 1, "losses": losses, "options": options.__dict__, "world_size": world,
                         "sequence_parallel": sequence_parallel,
                         "train_frames": split, "validation_frames": times - split},
        }
        if rank == 0:
            ckpt.save_checkpoint(model_dir, denoiser, config,
                                 {"generator": generator.get_state(), **optimizer_tensors(optimizer)})
    if world > 1:
        dist.barrier()
    return config if epochs > done else ckpt.read_config(model_dir)


def average_gradients(module: torch.nn.Module) -> None:
    """Every parameter's gradient replaced by its sum over all processes divided by their number (one all-reduce)."""
    params = list(module.parameters())
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(g.view_as(p))


def sphere(series: Series) -> torch.Tensor | None:
    """(ny, 1) area weights cos(lat) / mean cos(lat) of a global latitude-longitude series, None for any other grid.

    Global: dims (lat, lon) with equally spaced longitudes that go once round, n |dlon| = 360 deg.
    The score-matching loss is then weighted by the cells' areas (cos(lat), as in WeatherBench's
    latitude-weighted RMSE, Rasp et al. 2020), so that the many small polar cells do not dominate;
    regional and model grids keep the unweighted loss.
    """
    if tuple(series.dims[-2:]) != ("lat", "lon") or not {"lat", "lon"} <= set(series.coords):
        return None
    lon = np.asarray(series.coords["lon"], dtype=np.float64)
    step = np.diff(lon)
    if lon.size < 2 or not np.allclose(step, step[0], rtol=0, atol=1e-6 * 360) or abs(lon.size * abs(step[0]) - 360) > 1e-6 * 360:
        return None
    weights = np.clip(np.cos(np.radians(np.asarray(series.coords["lat"], dtype=np.float64))), 0, None)
    return torch.from_numpy(weights / weights.mean()).float()[:, None]


def history_perturbation(batch: int, shape: torch.Size, spacing: int, std: float,
                         generator: torch.Generator) -> torch.Tensor:
    """(B, 1, C, ny, nx) smooth perturbations of the history frames, RMS ``std`` (normalised units); 0 when std = 0.

    Cycled, the history frames are the method's own analyses, with errors that a network trained on
    true histories never sees. Adding e = std * bilinear(N(0, 1) on nodes ``spacing`` cells apart),
    normalised to unit RMS per window, trains p(x_t | history + e) instead (noise augmentation of
    the conditioning; the targets stay true), a network robust to imperfect histories: on ERA5 t2m
    cycled hourly with 5% observed, RMSE 0.725 K with std 0.3 against 0.791 K without
    (benchmarks/README.md; the ensemble's spread/skill stays 0.63). The same e is added to all K
    frames of a window, as cycling errors persist from hour to hour, so the history's tendency is
    kept. Drawn only when std > 0, so runs without it keep their random stream.
    """
    if std == 0:
        return torch.zeros(batch, 1, *shape)
    levels, ny, nx = shape
    nodes = torch.randn((batch, levels, ny // spacing + 2, nx // spacing + 2), generator=generator)
    field = torch.nn.functional.interpolate(nodes, size=(ny, nx), mode="bilinear", align_corners=True)
    field = field / field.pow(2).mean(dim=(-2, -1), keepdim=True).sqrt()
    return std * field.unsqueeze(1)


@torch.no_grad()
def validation_loss(denoiser: Denoiser, frames: torch.Tensor, starts: torch.Tensor, arch: Architecture,
                    norm: Normalisation, seed: int, area: torch.Tensor | float = 1.0) -> float | None:
    """Score-matching loss on the validation windows with fixed noises (comparable across epochs)."""
    if len(starts) == 0:
        return None
    denoiser.eval()
    generator = torch.Generator().manual_seed(seed + 1)
    total = 0.0
    for chosen in starts.split(64):
        hist, future = windows(frames, chosen, arch.history, arch.target)
        hist, targ = norm.centred(hist, norm.targets(hist, future))
        total += float(score_matching_loss(denoiser, hist, targ, torch.randn(len(chosen), generator=generator),
                                           torch.randn(targ.shape, generator=generator), area)) * len(chosen)
    return total / len(starts)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as flat named tensors ("optim.<param>.<name>")."""
    return {f"optim.{p}.{k}": v.contiguous() for p, state in optimizer.state_dict()["state"].items() for k, v in state.items()}


def optimizer_state_dict(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> dict:
    """Inverse of :func:`optimizer_tensors` around the optimizer's own param_groups."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, p, name = key.split(".")
        state.setdefault(int(p), {})[name] = value
    return {"state": state, "param_groups": optimizer.state_dict()["param_groups"]}
