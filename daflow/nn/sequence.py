"""Sequence parallelism: the tokens of one window split across the processes of a group.

With kernelised attention (:mod:`daflow.nn.attention`) the only quantities that couple tokens are
the per-head summaries S = phi(K)^T V (d x d) and z = phi(K)^T 1 (d), sums over tokens. A window
of N tokens is cut into P contiguous slices, one per rank of a *sequence group*; rank r computes
S_r and z_r on its slice, and one all-reduce S = sum_r S_r, z = sum_r z_r of H (d^2 + d) numbers
per layer and window, independent of N, gives every rank the global summaries (STORM's
"global attention across devices"). The token-wise parts (patch embedding, position codes,
layer norms, MLPs, the output projection) need no communication.

Autograd across ranks (the "f/g" pairs of Megatron-LM, Shoeybi et al. 2019):

- :func:`reduce_sum` (the summaries): forward y = sum_r x_r; rank r' uses y on its own tokens,
  so the total loss L = sum_r' L_r' has dL/dx_r = sum_r' dL_r'/dy: the backward is an all-reduce too.
- :func:`gather_sum` (the output patches, each rank's placed in a zero field): forward the same
  sum, but what follows (loss, sampler) is replicated, every rank computing the same L from the
  same y, so dL/dx_r = dL/dy, the gradient every rank already holds: the backward is the identity.
- :func:`take_slice` (a replicated input cut to this rank's tokens): forward x[lo:hi]; backward
  the gradient padded with zeros to the full length and all-reduced, so that a replicated input
  gets the gradient through every rank's slice.

Parameters used on the local slice get only their slice's share of the gradient; summing the
gradients over the sequence group (as data-parallel training sums them over its processes) gives
the single-process gradient. Slices follow :func:`bounds`: as even as possible in whole tiles
of softmax attention, so that no tile crosses a rank boundary.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from daflow.seeding import record_seed


@dataclass(frozen=True)
class SequenceGroup:
    """This process's place in a sequence group of ``size`` ranks (``group``: its torch process group)."""

    rank: int
    size: int
    group: object = None

    def bounds(self, tokens: int, unit: int = 1) -> tuple[int, int]:
        """[lo, hi) of this rank's tokens, see :func:`bounds`."""
        return bounds(tokens, self.size, self.rank, unit)


def bounds(tokens: int, ranks: int, rank: int, unit: int = 1) -> tuple[int, int]:
    """Contiguous slice [lo, hi) of ``tokens`` for ``rank`` of ``ranks``: whole units, sizes differing by at most one unit.

    ValueError when there are fewer units (tiles, or tokens when unit = 1) than ranks.
    """
    units = tokens // unit
    if units < ranks:
        what = f"{units} tiles of {unit} tokens" if unit > 1 else f"{tokens} tokens"
        raise ValueError(f"a window of {what} cannot be split across {ranks} sequence-parallel ranks")
    return rank * units // ranks * unit, (rank + 1) * units // ranks * unit


def new_groups(world: int, rank: int, size: int) -> tuple[SequenceGroup, int, int]:
    """Split ``world`` processes into world / size sequence groups of consecutive ranks.

    Every process must call this (it creates all the groups). Returns (this rank's sequence group,
    its data-parallel index, the number of data-parallel groups).
    """
    if size < 1 or world % size:
        raise ValueError(f"{world} processes cannot form groups of --sequence-parallel {size} (the world size must divide by it)")
    groups = [dist.new_group(list(range(g * size, (g + 1) * size))) if size > 1 else None for g in range(world // size)]
    return SequenceGroup(rank % size, size, groups[rank // size]), rank // size, world // size


class _ReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        x = x.clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _GatherSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class _TakeSlice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lo: int, hi: int, dim: int, group) -> torch.Tensor:
        ctx.lo, ctx.hi, ctx.dim, ctx.group, ctx.length = lo, hi, dim, group, x.shape[dim]
        return x.narrow(dim, lo, hi - lo).clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        shape = list(grad.shape)
        shape[ctx.dim] = ctx.length
        full = grad.new_zeros(shape)
        full.narrow(ctx.dim, ctx.lo, ctx.hi - ctx.lo).copy_(grad)
        dist.all_reduce(full, group=ctx.group)
        return full, None, None, None, None


def reduce_sum(x: torch.Tensor, sequence: SequenceGroup | None) -> torch.Tensor:
    """sum over the sequence group's ranks of x (differentiable); x itself without a group."""
    return x if sequence is None or sequence.size == 1 else _ReduceSum.apply(x, sequence.group)


def gather_sum(x: torch.Tensor, sequence: SequenceGroup | None) -> torch.Tensor:
    """sum over the group's ranks of their disjoint parts x of a result that every rank then uses alike."""
    return x if sequence is None or sequence.size == 1 else _GatherSum.apply(x, sequence.group)


def take_slice(x: torch.Tensor, lo: int, hi: int, dim: int, sequence: SequenceGroup | None) -> torch.Tensor:
    """x[lo:hi] along ``dim`` of an input replicated on the group's ranks (gradient summed over the ranks)."""
    if sequence is None or sequence.size == 1:
        return x.narrow(dim, lo, hi - lo)
    return _TakeSlice.apply(x, lo, hi, dim, sequence.group)


def shared_seed(seed: int | None, sequence: SequenceGroup | None) -> int | None:
    """``seed``; without one, under a sequence group, one random seed common to the group's ranks.

    The ranks of a group hold the same state and must draw the same noises: each draws a
    candidate, and all take the largest (one all-reduce).
    """
    if seed is not None or sequence is None or sequence.size == 1:
        return seed
    candidate = torch.randint(0, 2**62, (1,))
    dist.all_reduce(candidate, op=dist.ReduceOp.MAX, group=sequence.group)
    record_seed(int(candidate))
    return int(candidate)


def writes_output() -> bool:
    """Whether this process writes the output files: the only process, or rank 0 under torchrun."""
    return int(os.environ.get("RANK", "0")) == 0
