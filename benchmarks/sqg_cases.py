"""SQG against the NumPy transcription of sqgturb (tests/test_sqg.py) on settings beyond the defaults.

For each case: a random start spun up two days by daflow (float64) at the case's settings, then a
12-hour forecast by daflow in float64 and float32 and by the transcription; prints the largest
difference over the field's std (bars: 1e-5 in float64, 1e-3 in float32). Then, with
advection="exact" and no forcing, the relative drift of the total energy over 24 hours from
sqgturb's random start at dt = 600, 300 and 150 s (RK4 alone: it should fall like dt^4 or faster).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sqg_cases.py
"""
from __future__ import annotations

import importlib.util
import math
import pathlib

import numpy as np
import torch

from daflow.models.sqg import SQG

DAY = 86400.0
CASES = [{"N": 32}, {"N": 128}, {"N": 48}, {"N": 30}, {"N": 50}, {"N": 6}, {"N": 10}, {"r": 0.1}, {"r": 0.5, "N": 32},
         {"tdiab": math.inf}, {"diff_order": 4}, {"diff_efold": 3 * 3600.0}, {"diff_efold": math.inf}, {"dt": 600.0},
         {"dt": 900.0}, {"U": 20.0}, {"H": 8e3}, {"nsq": 2e-4}, {"L": 10e6}, {"f": 2e-4},
         {"r": 0.2, "tdiab": math.inf, "diff_order": 4, "U": 40.0, "dt": 900.0}]


def reference_class():
    path = pathlib.Path(__file__).resolve().parent.parent / "tests" / "test_sqg.py"
    spec = importlib.util.spec_from_file_location("test_sqg", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.SqgturbReference


def main() -> None:
    torch.set_num_threads(1)
    reference_model = reference_class()
    print("| case | float64: max diff / std | float32 |")
    print("| --- | --- | --- |")
    for case in CASES:
        params = dict(case)
        dt = params.pop("dt", 1200.0)
        m = SQG(dtype=torch.float64, **params)
        x0 = m.advance(m.random_state(1, torch.Generator().manual_seed(3)), dt, round(2 * DAY / dt))
        steps = round(12 * 3600 / dt)
        reference = reference_model(dt=dt, **params).advance(x0[0].numpy() / m.scale, steps) * m.scale
        errors = []
        for dtype in (torch.float64, torch.float32):
            x = SQG(dtype=dtype, **params).advance(x0.to(dtype), dt, steps)
            errors.append(float(np.abs(x[0].double().numpy() - reference).max() / reference.std()))
        verdict = ["pass" if e < bar else "FAIL" for e, bar in zip(errors, (1e-5, 1e-3))]
        label = ", ".join(f"{k}={v:g}" for k, v in case.items()) or "defaults"
        print(f"| {label} | {errors[0]:.1e} {verdict[0]} | {errors[1]:.1e} {verdict[1]} |", flush=True)
    print("\n| N | energy drift in 24 h at dt = 600 / 300 / 150 s (advection=exact, no forcing) |")
    print("| --- | --- |")
    for N in (32, 64, 128):
        free = SQG(N=N, dtype=torch.float64, tdiab=math.inf, diff_efold=math.inf, r=0.0, advection="exact")
        x0 = free.random_state(1, torch.Generator().manual_seed(5))
        e0 = free.energy(x0)
        drift = [float((free.energy(free.advance(x0, dt, round(DAY / dt))) / e0 - 1).abs()) for dt in (600.0, 300.0, 150.0)]
        print(f"| {N} | {' / '.join(f'{d:.1e}' for d in drift)} |", flush=True)


if __name__ == "__main__":
    main()
