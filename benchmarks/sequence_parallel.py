"""Sequence-parallel global linear attention: time, peak memory and communication per rank, 1, 2, 4 processes.

One attention layer of width 64 with 4 heads (head size 16), batch 1, forward pass without
gradients, the tokens split in contiguous slices across P processes (torch.distributed, gloo on
loopback on CPU, NCCL on GPU), two implementations in the same run:

- ``summary`` (daflow, :mod:`daflow.nn.sequence`): each rank computes phi(K)^T V and phi(K)^T 1 on
  its slice, one all-reduce of H d (d + 1) numbers per layer, whatever the number of tokens;
- ``allgather``: each rank gathers every rank's K and V (2 N x width numbers) and applies linear
  attention of its queries to all of them, the obvious alternative.

Weak scaling: tokens per rank fixed (2^12 .. 2^20, 2^16 with --quick), P = 1, 2, 4. Strong
scaling: one window of 2^18 tokens (2^15 with --quick) split 1, 2, 4 ways. Time is the best of
3 runs of the layer, all ranks in step (a barrier before each run; the slowest rank's time).
Peak memory per rank is the rise of the process's peak resident set above the resident set
with its inputs allocated (as benchmarks/attention.py), the largest over the ranks.
Communication is what one rank receives per layer in the forward pass (a ring all-reduce of S
bytes moves about 2 S (P - 1) / P; the backward pass moves as much again). With more processes
than cores the times measure contention, not scaling: the figures of interest on a small machine
are memory and communication per rank.

    python benchmarks/sequence_parallel.py [--quick] [--json FILE] [--ranks 1 2 4]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from daflow.nn.attention import GlobalLinearAttention, linear_attention
from daflow.nn.sequence import SequenceGroup, bounds

WIDTH, HEADS = 64, 4
HEAD = WIDTH // HEADS


class AllGatherLayer(GlobalLinearAttention):
    """The same projections; every rank gathers all K and V and attends to them."""

    def forward(self, x):
        b, n, dim = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        if self.sequence is not None:
            k, v = (_gather(t.contiguous(), self.sequence) for t in (k, v))
        return self.out(linear_attention(q, k, v).transpose(1, 2).reshape(b, n, dim))


def _gather(t: torch.Tensor, sequence: SequenceGroup) -> torch.Tensor:
    """Concatenate every rank's (B, H, n_r, d) slices along tokens (uneven slices padded to the largest)."""
    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(sequence.size)]
    dist.all_gather(sizes, torch.tensor([t.shape[2]]))
    most = int(max(sizes))
    padded = torch.nn.functional.pad(t, (0, 0, 0, most - t.shape[2]))
    parts = [torch.empty_like(padded) for _ in range(sequence.size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:, :, :int(s)] for p, s in zip(parts, sizes)], dim=2)


def received_bytes(method: str, tokens: int, ranks: int) -> int:
    """Bytes one rank receives per layer, forward pass, float32 (ring collectives)."""
    if ranks == 1:
        return 0
    if method == "summary":
        return round(2 * 4 * HEADS * HEAD * (HEAD + 1) * (ranks - 1) / ranks)
    return 4 * 2 * tokens * WIDTH * (ranks - 1) // ranks  # K and V of the other ranks' tokens


def _peak_kib() -> int:
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM"))
    return int(line.split()[1])


def _rss_kib() -> int:
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmRSS"))
    return int(line.split()[1])


@torch.no_grad()
def _measure(method: str, total: int, sequence: SequenceGroup | None, repeats: int) -> tuple[float, int]:
    """(slowest rank's best seconds, this rank's peak bytes above its inputs) for a window of ``total`` tokens."""
    rank, size = (sequence.rank, sequence.size) if sequence else (0, 1)
    lo, hi = bounds(total, size, rank)
    torch.manual_seed(0)
    layer = (GlobalLinearAttention if method == "summary" else AllGatherLayer)(WIDTH, HEADS)
    layer.sequence = sequence
    x = torch.randn(1, hi - lo, WIDTH)
    layer(x[:, :64])  # warm-up (allocator, collectives)
    best = float("inf")
    for _ in range(repeats):
        if sequence:
            dist.barrier()
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        base = _rss_kib()
        start = time.perf_counter()
        layer(x)
        seconds = torch.tensor([time.perf_counter() - start])
        peak = (_peak_kib() - base) * 1024
        if sequence:
            dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        best = min(best, float(seconds))
    return best, peak


def _worker(rank: int, ranks: int, port: int, cases: list, repeats: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD: large blocks go back to the OS on free
    sequence = None
    if ranks > 1:
        dist.init_process_group("gloo", rank=rank, world_size=ranks)
        sequence = SequenceGroup(rank, ranks, dist.group.WORLD)
    rows = []
    try:
        for scaling, method, total in cases:
            seconds, peak = _measure(method, total, sequence, repeats)
            peaks = torch.tensor([float(peak)])
            if sequence:
                dist.all_reduce(peaks, op=dist.ReduceOp.MAX)
            rows.append({"scaling": scaling, "method": method, "ranks": ranks, "tokens": total,
                         "tokens_per_rank": -(-total // ranks), "seconds": seconds, "peak_bytes_per_rank": int(peaks),
                         "received_bytes_per_layer": received_bytes(method, total, ranks)})
    finally:
        if sequence:
            dist.destroy_process_group()
    if rank == 0:
        Path(folder, f"{ranks}.json").write_text(json.dumps(rows))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(ranks_list: list[int], per_rank: list[int], window: int, max_gib: float, repeats: int) -> list[dict]:
    rows = []
    for ranks in ranks_list:
        cases = [("strong", m, window) for m in ("summary", "allgather")]
        for n in per_rank:
            for method in ("summary", "allgather"):
                need = 4 * WIDTH * (n * 8 + (2 * n * ranks if method == "allgather" else 0))  # rough bytes per rank
                if need <= max_gib * 2**30:
                    cases.append(("weak", method, n * ranks))
        with tempfile.TemporaryDirectory() as folder:
            if ranks == 1:
                _worker(0, 1, 0, cases, repeats, folder)
            else:
                torch.multiprocessing.spawn(_worker, args=(ranks, _free_port(), cases, repeats, folder), nprocs=ranks)
            new = json.loads(Path(folder, f"{ranks}.json").read_text())
        for r in new:
            print(f"{r['scaling']:>6} {r['method']:>9} P={r['ranks']} {r['tokens']:>9} tokens ({r['tokens_per_rank']:>8} per rank): "
                  f"{r['seconds']:8.4f} s, {r['peak_bytes_per_rank'] / 2**20:8.1f} MiB per rank, "
                  f"{r['received_bytes_per_layer'] / 2**10:10.1f} KiB received per layer", flush=True)
        rows += new
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="up to 2^16 tokens per rank, a window of 2^15 for strong scaling")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--max-gib", type=float, default=3.0, help="skip cases predicted to need more memory per rank")
    parser.add_argument("--json", help="write the rows as one JSON object")
    args = parser.parse_args()
    per_rank = [2**p for p in range(12, 17 if args.quick else 21, 2)]
    window = 2**15 if args.quick else 2**18
    print(f"width {WIDTH}, {HEADS} heads, one thread per rank, torch {torch.__version__}, {os.cpu_count()} cores")
    rows = run(args.ranks, per_rank, window, args.max_gib, repeats=2 if args.quick else 3)
    if args.json:
        Path(args.json).write_text(json.dumps({"width": WIDTH, "heads": HEADS, "rows": rows}))


if __name__ == "__main__":
    main()
