"""Attention of linear cost in the number of tokens, with optional exact softmax attention in tiles.

Global linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"), the global mixer of
STORM: with a positive feature map phi(u) = elu(u) + 1, the softmax kernel exp(q.k) is replaced
by phi(q).phi(k), so that

    out_i = sum_j phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j)
          = phi(q_i) (phi(K)^T V) / phi(q_i) (phi(K)^T 1).

The d x d summary phi(K)^T V is computed once, so time is O(N d^2) and memory O(N d) for N
tokens, instead of O(N^2 d) and O(N^2) for softmax attention.

Tiled softmax attention adds local detail: exact softmax attention (Vaswani et al. 2017) among
the tokens of each tile of ``tile`` consecutive tokens (tokens are ordered so that a tile is a
patch of neighbouring grid cells), also linear in N for a fixed tile.

Sequence-parallel (:mod:`daflow.nn.sequence`): with a ``sequence`` group each rank passes its
own contiguous slice of the tokens; the summaries phi(K)^T V and phi(K)^T 1 are summed over the
group's ranks (one all-reduce of H (d^2 + d) numbers per layer, whatever N), so each rank gets
exactly the rows of the single-process output for its tokens. Tiles of the softmax attention
never cross a rank boundary (the slices are whole tiles), so they need no communication.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from daflow.nn.sequence import SequenceGroup, reduce_sum


def feature_map(u: torch.Tensor) -> torch.Tensor:
    """phi(u) = elu(u) + 1 > 0."""
    return F.elu(u) + 1.0


def kernel_summary(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[phi(K)^T V | phi(K)^T 1]; k, v: (B, H, N, d) -> (B, H, d, d + 1). Sums over tokens, so the
    summary of a sequence is the sum of its blocks' summaries."""
    k = feature_map(k)
    return torch.cat([torch.einsum("bhnd,bhne->bhde", k, v), k.sum(dim=2).unsqueeze(-1)], dim=-1)


def apply_summary(q: torch.Tensor, summary: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """phi(Q) (phi(K)^T V) / phi(Q) (phi(K)^T 1); q: (B, H, N, d), summary: (B, H, d, d + 1) -> (B, H, N, d)."""
    q = feature_map(q)
    kv, k_sum = summary[..., :-1], summary[..., -1]                    # (B, H, d, d), (B, H, d)
    normaliser = torch.einsum("bhnd,bhd->bhn", q, k_sum) + eps         # (B, H, N)
    return torch.einsum("bhnd,bhde->bhne", q, kv) / normaliser.unsqueeze(-1)


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6,
                     sequence: SequenceGroup | None = None) -> torch.Tensor:
    """phi(Q) (phi(K)^T V) / phi(Q) (phi(K)^T 1); q, k, v: (B, H, N, d) -> (B, H, N, d).

    With ``sequence``, q, k, v are this rank's slice of the tokens and the sums over tokens run
    over all the group's slices (one all-reduce of the summary).
    """
    return apply_summary(q, reduce_sum(kernel_summary(k, v), sequence), eps)


def quadratic_kernel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same kernel sum written out with the N x N matrix (the O(N^2) oracle for tests)."""
    weights = torch.einsum("bhnd,bhmd->bhnm", feature_map(q), feature_map(k))  # (B, H, N, N)
    return (weights @ v) / weights.sum(dim=-1, keepdim=True)


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Naive softmax attention with the full N x N score matrix; (B, H, N, d) -> (B, H, N, d)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, N, N)
    return scores.softmax(dim=-1) @ v


def tiled_softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tile: int) -> torch.Tensor:
    """Exact softmax attention within tiles of ``tile`` consecutive tokens; N must divide by tile."""
    b, h, n, d = q.shape
    split = (b, h, n // tile, tile, d)  # (B, H, tiles, tile, d)
    out = F.scaled_dot_product_attention(q.reshape(split), k.reshape(split), v.reshape(split))
    return out.reshape(b, h, n, d)


class GlobalLinearAttention(nn.Module):
    """Multi-head attention layer: global linear attention, plus softmax attention in tiles if ``tile``.

    (B, N, dim) -> (B, N, dim). With tiles, the two mixers share Q, K, V and their outputs add up;
    N must then be a multiple of ``tile`` (the transformer pads the token sequence). With
    ``sequence`` set (:meth:`SpatioTemporalTransformer.split`), x is this rank's slice of whole tiles.

    Sequences longer than ``block`` tokens run in blocks (of whole tiles) in two passes: the first
    sums the blocks' summaries from their K and V, the second projects each block's Q (and K, V
    for the tiles), mixes and writes its rows of the output. The working set is then one block
    whatever N, so time and memory beyond the input and output stay proportional to N.
    """

    block_tokens = 4096

    def __init__(self, dim: int, heads: int, tile: int = 0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not a multiple of {heads} heads")
        self.heads, self.tile = heads, tile
        self.block = max(tile, self.block_tokens - self.block_tokens % tile) if tile else self.block_tokens
        self.sequence: SequenceGroup | None = None
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        starts = range(0, x.shape[1], self.block)
        if len(starts) == 1:
            qkv = self._project(x, 0, 3)
            return self._mix(qkv, reduce_sum(kernel_summary(*qkv[1:]), self.sequence))
        summary = torch.stack([kernel_summary(*self._project(x[:, s:s + self.block], 1, 3)) for s in starts]).sum(0)
        summary = reduce_sum(summary, self.sequence)                   # (B, H, d, d + 1)
        out = x.new_empty(x.shape)
        for s in starts:
            rows = x[:, s:s + self.block]
            out[:, s:s + self.block] = self._mix(self._project(rows, 0, 3 if self.tile else 1), summary)
        return out

    def _project(self, x: torch.Tensor, first: int, stop: int) -> list[torch.Tensor]:
        """Parts first..stop-1 of (Q, K, V) of x (B, N, dim), each (B, H, N, d)."""
        b, n, dim = x.shape
        rows = slice(first * dim, stop * dim)
        parts = F.linear(x, self.qkv.weight[rows], self.qkv.bias[rows])  # (B, N, parts * dim)
        return list(parts.reshape(b, n, stop - first, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4))

    def _mix(self, qkv: list[torch.Tensor], summary: torch.Tensor) -> torch.Tensor:
        """Output projection of the global (and, with tiles, tiled) mix of one block; qkv: [Q] or
        [Q, K, V], each (B, H, n, d) -> (B, n, dim)."""
        q = qkv[0]
        mixed = apply_summary(q, summary)
        if self.tile:
            mixed = mixed + tiled_softmax_attention(q, qkv[1], qkv[2], self.tile)
        b, h, n, d = q.shape
        return self.out(mixed.transpose(1, 2).reshape(b, n, h * d))
