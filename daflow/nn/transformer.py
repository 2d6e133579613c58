"""The spatio-temporal diffusion transformer (STORM-like denoiser network).

Input: K history frames (clean) and T target frames (noisy), each (levels, y, x), and the noise
level sigma. Every frame is cut into patches of all levels x p x p cells; a patch is one token,
so a window has (K + T) * ceil(y/p) * ceil(x/p) tokens over (time, level, y, x). Tokens get a
sinusoidal space-time position encoding (frame index, patch row, patch column) and a learned
role embedding (history or target), pass through blocks of global linear attention (optionally
with softmax attention in local tiles) and an MLP, each modulated by adaptive layer norm on the
noise level (adaLN-Zero, Peebles & Xie 2023, "Scalable diffusion models with transformers"),
and the target tokens are mapped back to frames.

On a global latitude-longitude grid (``Architecture.wrap``) longitude is a circle: the patches
that pass the last column take the first columns (circular padding, not replicated edge values)
and the column code is periodic, sin/cos(2 pi k j / gx) for harmonics k = 1, 2, ... of the gx
patch columns, so the tokens either side of the date line are as near in code as any neighbours
(no seam; exact when the patch side divides the number of longitudes).

Sequence-parallel (:meth:`SpatioTemporalTransformer.split`, :mod:`daflow.nn.sequence`): each
rank of a sequence group embeds, encodes and transforms only its contiguous slice of the window's
tokens (whole softmax tiles); the attention sums its summaries over the group, and the target
patches of all slices are summed into the output frames, which every rank then holds. The
inputs and outputs (fields of C x ny x nx per frame) are replicated; the tokens (width per
patch, 4 x width inside the MLPs), which dominate the memory, are not.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from daflow.nn.attention import GlobalLinearAttention
from daflow.nn.sequence import SequenceGroup, gather_sum, take_slice


@dataclass(frozen=True)
class Architecture:
    """Everything that fixes the network's shapes (stored in the checkpoint's JSON)."""

    levels: int            # channels per frame (state levels)
    ny: int                # grid rows
    nx: int                # grid columns
    history: int           # K context frames
    target: int = 1        # T frames inferred per window
    patch: int = 4         # p: patch side in grid cells
    width: int = 96        # token width
    depth: int = 3         # transformer blocks
    heads: int = 4
    tile: int = 0          # tokens per local softmax tile (0: global linear attention only)
    wrap: bool = False     # x is a circle (a global longitude): patches and position codes wrap round it

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encoding (Vaswani et al. 2017): (N,) -> (N, dim), dim even."""
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, dtype=torch.float32) / (dim // 2))
    angles = positions.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def periodic(positions: torch.Tensor, period: int, dim: int) -> torch.Tensor:
    """Encoding of positions on a circle of ``period``: sin, cos(2 pi k j / period), k = 1..dim/2: (N,) -> (N, dim)."""
    angles = 2 * math.pi * positions.float()[:, None] * torch.arange(1, dim // 2 + 1, dtype=torch.float32)[None, :] / period
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class PatchEmbedding(nn.Module):
    """(B, F, C, ny, nx) frames -> (B, F * gy * gx, width) tokens; pads the grid to multiples of p."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.p, self.wrap = arch.patch, arch.wrap
        self.proj = nn.Linear(arch.levels * arch.patch**2, arch.width)

    def patches(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, F, C, ny, nx) -> (B, F * gy * gx, C * p * p) patch values in token order."""
        b, f, c, ny, nx = frames.shape
        p = self.p
        x = frames.reshape(b * f, c, ny, nx)
        if self.wrap:  # longitude is a circle: the last patch column continues with the first longitudes
            x = F.pad(x, (0, -nx % p, 0, 0), mode="circular")
        x = F.pad(x, (0, -x.shape[-1] % p, 0, -ny % p), mode="replicate")
        gy, gx = x.shape[-2] // p, x.shape[-1] // p
        x = x.reshape(b, f, c, gy, p, gx, p).permute(0, 1, 3, 5, 2, 4, 6)  # (B, F, gy, gx, C, p, p)
        return x.reshape(b, f * gy * gx, c * p * p)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.proj(self.patches(frames))


class PatchUnembedding(nn.Module):
    """(B, T * gy * gx, width) tokens -> (B, T, C, ny, nx) frames (crops the padding)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        self.norm = nn.LayerNorm(arch.width, elementwise_affine=False)
        self.proj = nn.Linear(arch.width, arch.levels * arch.patch**2)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def patch_values(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, n, width) tokens -> (B, n, C * p * p) patch values."""
        return self.proj(self.norm(tokens))

    def frames(self, values: torch.Tensor) -> torch.Tensor:
        """(B, T * gy * gx, C * p * p) patch values -> (B, T, C, ny, nx) frames."""
        a, b = self.arch, values.shape[0]
        gy, gx, p = -(-a.ny // a.patch), -(-a.nx // a.patch), a.patch
        x = values.reshape(b, a.target, gy, gx, a.levels, p, p)
        x = x.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, a.target, a.levels, gy * p, gx * p)
        return x[..., : a.ny, : a.nx]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.frames(self.patch_values(tokens))


class SpaceTimeEncoding(nn.Module):
    """Additive token encoding: sinusoids of (frame, row, column) plus a learned history/target role."""

    def __init__(self, arch: Architecture):
        super().__init__()
        gy, gx, frames = -(-arch.ny // arch.patch), -(-arch.nx // arch.patch), arch.history + arch.target
        t, y, x = torch.meshgrid(torch.arange(frames), torch.arange(gy), torch.arange(gx), indexing="ij")
        third = 2 * (arch.width // 6)
        columns = periodic(x.flatten(), gx, third) if arch.wrap else sinusoid(x.flatten(), third)
        code = torch.cat([sinusoid(t.flatten(), third), sinusoid(y.flatten(), third), columns], -1)
        self.register_buffer("code", F.pad(code, (0, arch.width - 3 * third)), persistent=False)  # (N, width)
        self.role = nn.Parameter(torch.zeros(2, arch.width))
        self.register_buffer("is_target", (t.flatten() >= arch.history).long(), persistent=False)  # (N,)

    def forward(self, tokens: torch.Tensor, first: int = 0) -> torch.Tensor:
        """tokens: (B, n, width), the window's tokens first..first+n-1."""
        mine = slice(first, first + tokens.shape[1])
        return tokens + self.code[mine] + self.role[self.is_target[mine]]


class NoiseEmbedding(nn.Module):
    """c_noise(sigma) = ln(sigma) / 4 (EDM) -> (B, width) conditioning vector."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoid(sigma.log() / 4 * 1000, self.width).to(sigma.dtype))


class AdaLNBlock(nn.Module):
    """x + g1 * Attn(LN(x)(1 + s1) + b1); x + g2 * MLP(LN(x)(1 + s2) + b2), (s, b, g) from the noise."""

    def __init__(self, arch: Architecture):
        super().__init__()
        w = arch.width
        self.norm1 = nn.LayerNorm(w, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(w, elementwise_affine=False)
        self.attention = GlobalLinearAttention(w, arch.heads, arch.tile)
        self.mlp = nn.Sequential(nn.Linear(w, 4 * w), nn.GELU(), nn.Linear(4 * w, w))
        self.modulation = nn.Linear(w, 6 * w)
        nn.init.zeros_(self.modulation.weight)  # adaLN-Zero: every block starts as the identity
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        # x: (B, N, width); condition: (B, width)
        s1, b1, g1, s2, b2, g2 = self.modulation(F.silu(condition)).unsqueeze(1).chunk(6, dim=-1)  # 6 x (B, 1, width)
        x = x + g1 * self.attention(self.norm1(x) * (1 + s1) + b1)
        return x + g2 * self.mlp(self.norm2(x) * (1 + s2) + b2)


class SpatioTemporalTransformer(nn.Module):
    """F(history, noisy target, sigma): (B, K, C, ny, nx), (B, T, C, ny, nx), (B,) -> (B, T, C, ny, nx)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        self.frame_tokens = -(-arch.ny // arch.patch) * -(-arch.nx // arch.patch)
        self.tokens = (arch.history + arch.target) * self.frame_tokens
        if arch.tile and self.tokens % arch.tile:
            raise ValueError(f"tile {arch.tile} does not divide the {self.tokens} tokens of a window")
        self.sequence: SequenceGroup | None = None
        self.embed = PatchEmbedding(arch)
        self.encode = SpaceTimeEncoding(arch)
        self.noise = NoiseEmbedding(arch.width)
        self.blocks = nn.ModuleList(AdaLNBlock(arch) for _ in range(arch.depth))
        self.unembed = PatchUnembedding(arch)

    def split(self, sequence: SequenceGroup | None) -> SpatioTemporalTransformer:
        """Run sequence-parallel in ``sequence`` (None: whole windows); ValueError if a window has too few tokens/tiles."""
        if sequence is not None:
            sequence.bounds(self.tokens, self.arch.tile or 1)
        self.sequence = sequence
        for block in self.blocks:
            block.attention.sequence = sequence
        return self

    def forward(self, history: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        patches = self.embed.patches(torch.cat([history, target], dim=1))  # (B, N, C p^2)
        condition = self.noise(sigma)                                       # (B, width)
        first_target = self.arch.history * self.frame_tokens
        if self.sequence is None:
            tokens = self.encode(self.embed.proj(patches))                  # (B, N, width)
            for block in self.blocks:
                tokens = block(tokens, condition)
            return self.unembed(tokens[:, first_target:])
        lo, hi = self.sequence.bounds(self.tokens, self.arch.tile or 1)
        tokens = self.encode(self.embed.proj(take_slice(patches, lo, hi, 1, self.sequence)), lo)  # (B, hi - lo, width)
        for block in self.blocks:
            tokens = block(tokens, condition)
        start = max(lo, first_target)  # this rank's target tokens start..hi-1, placed in a zero field and summed over ranks
        values = self.unembed.patch_values(tokens[:, start - lo:])
        values = F.pad(values, (0, 0, start - first_target, self.tokens - max(hi, start)))
        return self.unembed.frames(gather_sum(values, self.sequence))
