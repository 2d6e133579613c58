"""Sequence parallelism (gloo, loopback, 2 and 3 spawned processes) against one process.

Each rank holds a contiguous, uneven slice of the tokens; the attention layer and the whole
denoiser give the single-process outputs and gradients (float64, 1e-10 relative), one epoch of
training gives the single-process weights and one guided sample the single-process analysis.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import xarray as xr
from safetensors.torch import load_file

from daflow.io.contract import open_dataset, write_dataset
from daflow.nn.attention import GlobalLinearAttention
from daflow.nn.data import read_series
from daflow.nn.diffusion import Denoiser
from daflow.api import assimilate
from daflow.nn.sequence import SequenceGroup, bounds, shared_seed, take_slice
from daflow.nn.training import train
from daflow.nn.transformer import Architecture

CONFIG = """[architecture]
width = 24
depth = 2
heads = 2
patch = 4
tile = 3
[training]
batch_size = 6
"""
# 8 x 12 grid, patch 4: 6 tokens a frame; history 2 + target 1: 18 tokens = 6 tiles of 3
ARCHES = [Architecture(levels=2, ny=10, nx=12, history=1, target=2, patch=4, width=12, depth=2, heads=3),  # 27 tokens
          Architecture(levels=1, ny=9, nx=9, history=2, target=1, patch=4, width=8, depth=2, heads=2, tile=3)]  # 27 = 9 tiles


def _layer_case(sequence: SequenceGroup | None) -> dict:
    """One attention layer (global + tiles of 4) on 44 tokens, loss sum(w * y): y, parameter and input gradients."""
    torch.manual_seed(0)
    layer = GlobalLinearAttention(12, 3, tile=4).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 44, 12, generator=g, dtype=torch.float64).requires_grad_(True)
    w = torch.randn(2, 44, 12, generator=g, dtype=torch.float64)
    lo, hi = (0, 44) if sequence is None else sequence.bounds(44, 4)
    layer.sequence = sequence
    y = layer(take_slice(x, lo, hi, 1, sequence))
    (w[:, lo:hi] * y).sum().backward()
    return {"y": y.detach(), "lo": lo, "hi": hi, "x": x.grad, **_summed_grads(layer, sequence)}


def _denoiser_case(arch: Architecture, sequence: SequenceGroup | None) -> dict:
    """The whole denoiser with random weights, loss sum(w * D): D, parameter and noisy-input gradients."""
    torch.manual_seed(0)
    denoiser = Denoiser(arch).double()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in denoiser.parameters():  # adaLN-Zero starts as the identity: make every path count
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    denoiser.net.split(sequence)
    history = torch.randn(2, arch.history, arch.levels, arch.ny, arch.nx, generator=g, dtype=torch.float64)
    noisy = torch.randn(2, arch.target, arch.levels, arch.ny, arch.nx, generator=g, dtype=torch.float64).requires_grad_(True)
    w = torch.randn(noisy.shape, generator=g, dtype=torch.float64)
    out = denoiser(history, noisy, torch.tensor([0.3, 4.0], dtype=torch.float64))
    (w * out).sum().backward()
    return {"out": out.detach(), "noisy": noisy.grad, **_summed_grads(denoiser, sequence)}


def _summed_grads(module: torch.nn.Module, sequence: SequenceGroup | None) -> dict:
    grads = {}
    for name, p in module.named_parameters():
        grad = p.grad.clone()
        if sequence is not None:
            dist.all_reduce(grad, group=sequence.group)
        grads[f"grad.{name}"] = grad
    return grads


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from daflow.progress import set_quiet

    set_quiet(True)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        sequence = SequenceGroup(rank, world, dist.group.WORLD)
        result = {"layer": _layer_case(sequence), "denoiser": [_denoiser_case(a, sequence) for a in ARCHES],
                  "seed": shared_seed(None, sequence)}
        torch.save(result, Path(folder) / f"rank{rank}.pt")
        data = Path(folder) / "truth.nc"
        train(read_series(open_dataset(str(data), ("state",)), None, str(data)), 2, 1, str(Path(folder) / f"m{world}"),
              str(Path(folder) / "tiny.toml"), source=str(data), sequence_parallel=world, seed=3)
        ds = assimilate("storm", Path(folder) / "obs.nc", checkpoint=str(Path(folder) / "m1"), members=2, background=data, seed=4,
                        sample_steps=3, sequence_parallel=world)
        if rank == 0:
            write_dataset(ds, Path(folder) / f"a{world}.nc", "analysis")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def single(tmp_path_factory, daflow_process):
    """A 20-frame series on an 8 x 12 grid, and its one-process model, analysis and layer/denoiser results."""
    folder = tmp_path_factory.mktemp("seqpar")
    rng = np.random.default_rng(0)
    t, y, x = np.arange(20), np.arange(8), np.arange(12)
    field = np.sin(2 * np.pi * x / 12 + 0.3 * t[:, None, None]) * np.cos(2 * np.pi * y / 8)[:, None] + 0.1 * rng.standard_normal((20, 8, 12))
    ds = xr.Dataset({"theta": (("time", "y", "x"), 280 + 5 * field, {"units": "K"})},
                    coords={"time": ("time", 3600.0 * t, {"units": "s"}), "y": y, "x": x})
    write_dataset(ds, folder / "truth.nc", "state")
    (folder / "tiny.toml").write_text(CONFIG)
    daflow_process("ingest", folder / "truth.nc", "--observe", "--fraction", 0.25, "--error-std", 0.5, "--seed", 1,
                   "-o", folder / "obs.nc")
    data = str(folder / "truth.nc")
    train(read_series(open_dataset(data, ("state",)), None, data), 2, 1, str(folder / "m1"), str(folder / "tiny.toml"),
          source=data, seed=3)
    write_dataset(assimilate("storm", folder / "obs.nc", checkpoint=str(folder / "m1"), members=2, background=data, seed=4,
                             sample_steps=3), folder / "a1.nc", "analysis")
    return folder, {"layer": _layer_case(None), "denoiser": [_denoiser_case(a, None) for a in ARCHES]}


def _close(a: torch.Tensor, b: torch.Tensor, rel: float, what: str) -> None:
    scale = b.abs().max().item()
    assert scale > 0, f"{what} is zero: the comparison would prove nothing"
    assert (a - b).abs().max().item() <= rel * scale, what


@pytest.mark.parametrize("world", [2, 3])
def test_split_across_processes_equals_one_process(single, world):
    folder, one = single
    torch.multiprocessing.spawn(_worker, args=(world, _free_port(), str(folder)), nprocs=world, join=True)
    ranks = [torch.load(folder / f"rank{r}.pt") for r in range(world)]
    # the attention layer: each rank's rows of the output, the whole-sequence gradients
    assert len({r["layer"]["hi"] - r["layer"]["lo"] for r in ranks}) > 1  # uneven slices (11 tiles of 4)
    assert len({r["seed"] for r in ranks}) == 1  # unseeded runs: the ranks still draw the same noises
    for r in ranks:
        layer = r["layer"]
        _close(layer["y"], one["layer"]["y"][:, layer["lo"]:layer["hi"]], 1e-10, "layer output")
        for key in one["layer"]:
            if key.startswith("grad.") or key == "x":
                _close(layer[key], one["layer"][key], 1e-10, f"layer {key}")
        for split, whole in zip(r["denoiser"], one["denoiser"]):
            for key in whole:
                _close(split[key], whole[key], 1e-10, f"denoiser {key}")
    # one epoch of training (3 steps of 6 windows), then a guided analysis from the one-process model
    a, b = load_file(folder / "m1" / "model.safetensors"), load_file(folder / f"m{world}" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        if a[key].abs().max() > 0:
            _close(b[key], a[key], 1e-4, f"trained {key}")
    a1, aw = xr.open_dataset(folder / "a1.nc").theta.values, xr.open_dataset(folder / f"a{world}.nc").theta.values
    assert a1.shape == aw.shape == (2, 1, 8, 12)
    assert np.abs(aw - a1).max() < 1e-4 * np.abs(a1 - a1.mean()).max()


def test_bounds_are_whole_tiles_differing_by_one():
    assert [bounds(27, 3, r, 3) for r in range(3)] == [(0, 9), (9, 18), (18, 27)]
    assert [bounds(27, 2, r, 3) for r in range(2)] == [(0, 12), (12, 27)]
    assert [bounds(5, 2, r) for r in range(2)] == [(0, 2), (2, 5)]
    with pytest.raises(ValueError, match="cannot be split across 4"):
        bounds(9, 4, 0, 3)
    with pytest.raises(ValueError, match="9 tiles of 3 tokens cannot be split across 10"):
        Denoiser(ARCHES[1]).net.split(SequenceGroup(0, 10))


def test_world_not_divisible_exits_65_on_every_rank(single, tmp_path):
    """torchrun with 2 processes and --sequence-parallel 3: one readable line and exit 65, no hang."""
    folder, _ = single
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    daflow = str(Path(sys.executable).with_name("daflow"))
    run = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "--no-python", daflow, "train", "--data",
                          folder / "truth.nc", "--history", "2", "--epochs", "1", "--sequence-parallel", "3", "-o", tmp_path / "m"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode != 0
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("daflow train: error:")]
    assert lines and all("2 process(es) cannot form groups of --sequence-parallel 3" in ln for ln in lines), run.stderr
    assert re.search(r"exitcode\s*:\s*65", run.stderr), run.stderr
