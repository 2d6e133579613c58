"""Time and peak memory of one attention layer against the number of tokens (CPU or GPU).

One layer of width 64 with 4 heads (head size 16), batch 1, forward pass without gradients:
daflow's global linear attention, the same with softmax attention in tiles of 64 tokens, and
the softmax reference, naive (full N x N scores) and torch's ``scaled_dot_product_attention``
(memory-efficient kernel). Each includes the Q/K/V and output projections. Token counts double
from 1024 to 2^20 (1,048,576; 2^18 with --quick); the time is the best of at least 3 runs (as many as fit in a second), on one CPU
thread by default (timings on a shared machine are steadier). A method stops at the first size
where its predicted memory exceeds --max-gib or its time, extrapolated from the previous size, more than --max-seconds.

Peak memory on CPU is the rise of the process's peak resident set (VmHWM, reset through
/proc/self/clear_refs) above the resident set with the inputs allocated; glibc is told to
return large blocks to the system so that each run starts from the same baseline. On a GPU it
is ``torch.cuda.max_memory_allocated`` above the inputs.

    python benchmarks/attention.py [--quick] [--json FILE] [--png FILE]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from daflow.nn.attention import GlobalLinearAttention, softmax_attention

WIDTH, HEADS, TILE = 64, 4, 64


class SoftmaxLayer(GlobalLinearAttention):
    """The same projections around softmax attention (``naive`` or torch's SDPA kernel)."""

    def __init__(self, naive: bool):
        super().__init__(WIDTH, HEADS)
        self.naive = naive

    def forward(self, x):
        b, n, dim = x.shape
        q, k, v = self._project(x, 0, 3)
        mixed = softmax_attention(q, k, v) if self.naive else F.scaled_dot_product_attention(q, k, v)
        return self.out(mixed.transpose(1, 2).reshape(b, n, dim))


METHODS = {
    "linear": lambda: GlobalLinearAttention(WIDTH, HEADS),
    "linear_tiled": lambda: GlobalLinearAttention(WIDTH, HEADS, tile=TILE),
    "softmax": lambda: SoftmaxLayer(naive=True),
    "sdpa": lambda: SoftmaxLayer(naive=False),
}


def predicted_bytes(method: str, n: int) -> int:
    """Rough memory need, to skip sizes that would not fit (naive softmax: the N x N scores)."""
    return 4 * HEADS * n * n * 2 if method == "softmax" else 4 * n * WIDTH * 12


class PeakMemory:
    """Peak bytes allocated inside the block above what was allocated on entry."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            self.base = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.peak = _status_kib("VmHWM") * 1024 - self.base


def _status_kib(key: str) -> int:
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(key))
    return int(line.split()[1])


@torch.no_grad()
def measure(method: str, n: int, device: torch.device, repeats: int, budget: float = 2.5) -> tuple[float, int]:
    """(best seconds, peak bytes) of one forward pass on (1, n, WIDTH) tokens: the best of ``repeats``
    runs, or of as many as fit in ``budget`` seconds if more (as timeit does: on a shared machine the
    minimum of many short runs is the figure least disturbed by other processes)."""
    torch.manual_seed(0)
    layer = METHODS[method]().to(device)
    x = torch.randn(1, n, WIDTH, device=device)
    layer(x[:, :1024])  # warm-up (kernel selection, allocator)
    seconds: list[float] = []
    while len(seconds) < repeats or (sum(seconds) < budget and len(seconds) < 100):
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            layer(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
    return min(seconds), memory.peak


def run(sizes: list[int], device: torch.device, max_gib: float, max_seconds: float, repeats: int) -> dict:
    results = {m: {"seconds": [], "peak_bytes": []} for m in METHODS}
    for method, res in results.items():
        stopped, power = False, 2 if method in ("softmax", "sdpa") else 1
        for i, n in enumerate(sizes):
            predicted_seconds = (res["seconds"][-1] or 0) * 2**power if i else 0.0  # sizes double
            stopped = stopped or predicted_bytes(method, n) > max_gib * 2**30 or predicted_seconds > max_seconds
            s, m = (None, None) if stopped else measure(method, n, device, repeats)
            res["seconds"].append(s)
            res["peak_bytes"].append(m)
            print(f"{method:>13} {n:>9} tokens: " + ("not run" if s is None else f"{s:9.4f} s {m / 2**20:9.1f} MiB"), flush=True)
    return results


def report(sizes: list[int], results: dict) -> None:
    print("\ntime per doubling of tokens (16k tokens and up):")
    for method, res in results.items():
        pairs = [(s0, s1, m0, m1) for n, s0, s1, m0, m1 in zip(sizes[1:], res["seconds"], res["seconds"][1:],
                                                                 res["peak_bytes"], res["peak_bytes"][1:])
                 if n > 16384 and s0 and s1]
        if pairs:
            time_ratio = ", ".join(f"{s1 / s0:.2f}" for s0, s1, _, _ in pairs)
            memory_ratio = ", ".join(f"{m1 / m0:.2f}" for _, _, m0, m1 in pairs if m0 > 0)
            print(f"  {method:>13}: time x {time_ratio}; memory x {memory_ratio}")
    both = [(n, a, b) for n, a, b in zip(sizes, results["linear"]["seconds"], results["sdpa"]["seconds"]) if a and b]
    if both:
        n, a, b = both[-1]
        print(f"at {n} tokens: linear {a:.4f} s, sdpa softmax {b:.4f} s, ratio softmax/linear {b / a:.1f}")


def plot(sizes: list[int], results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method, res in results.items():
        pts = [(n, s, m) for n, s, m in zip(sizes, res["seconds"], res["peak_bytes"]) if s is not None]
        if pts:
            ns, ss, ms = zip(*pts)
            axes[0].loglog(ns, ss, "o-", label=method)
            axes[1].loglog(ns, [max(m, 1) / 2**20 for m in ms], "o-", label=method)
    for ax, label in zip(axes, ("seconds per forward pass", "peak memory above inputs (MiB)")):
        ax.set_xlabel("tokens")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"one attention layer, width {WIDTH}, {HEADS} heads, batch 1")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="up to 2^18 tokens, a quarter of the memory and time limits")
    parser.add_argument("--json", help="write the figures as one JSON object")
    parser.add_argument("--png", help="log-log plot of time and memory (default: beside --json, else attention.png)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-gib", type=float, default=4.0, help="skip sizes predicted to need more memory")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="stop a method before a size predicted to take longer")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 keeps timings stable on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not torch.cuda.is_available():
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD: large blocks go back to the OS on free
    sizes = [2**p for p in range(10, 19 if args.quick else 21)]
    device = torch.device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    scale = 4 if args.quick else 1
    results = run(sizes, device, args.max_gib / scale, args.max_seconds / scale, repeats=3)
    report(sizes, results)
    plot(sizes, results, args.png or (str(Path(args.json).with_suffix(".png")) if args.json else "attention.png"))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "device": str(device), "width": WIDTH, "heads": HEADS, "tile": TILE, "tokens": sizes,
            **{f"{m}_{k}": v for m, res in results.items() for k, v in res.items()},
        }))


if __name__ == "__main__":
    main()
