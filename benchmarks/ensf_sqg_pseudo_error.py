"""EnSF + inpainting on SQG: the pass-2 pseudo-observation error assumed against the actual one.

Runs ``ensf_sqg.scenario`` (EnSF with biharmonic inpainting, no LETKF) and, at every analysis, compares
per level the assumed pseudo-observation error std (RMS over the unobserved points) with the actual RMS
error of the members' mean pseudo-observation against the truth, and reports the pass-1 analysis spread
and error at the observed points. Time means (RMS) over the analyses from ``--from-cycle`` on; ratio =
assumed / actual, averaged over those analyses.

    .venv/bin/python benchmarks/ensf_sqg_pseudo_error.py --scenarios 0.0625:arctan --seeds 7
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import ensf_sqg  # noqa: E402

from daflow.da.ensf import EnSF  # noqa: E402


def measure(spec, seed, cycles, spinup, first):
    fraction, kind = spec.split(":")
    _, truth, _ = ensf_sqg.nature_run(cycles, seed)
    records, original = [], EnSF._pseudo_observations

    def recorded(self, background, analysis, obs, method):
        index, values, errors = original(self, background, analysis, obs, method)
        y, cols, row = truth[int(obs.time)], self.grid.columns, []
        for level in range(self.grid.levels):
            pseudo = (index >= level * cols) & (index < (level + 1) * cols)
            seen = obs.index[(obs.index >= level * cols) & (obs.index < (level + 1) * cols)]
            row.append([errors[pseudo].square().mean().sqrt().item(),
                        (values[:, pseudo].mean(0) - y[index[pseudo]]).square().mean().sqrt().item(),
                        analysis[:, seen].var(0).mean().sqrt().item(),
                        (analysis[:, seen].mean(0) - y[seen]).square().mean().sqrt().item()])
        if obs.time >= first:
            records.append(row)
        return index, values, errors

    EnSF._pseudo_observations = recorded
    try:
        result, _ = ensf_sqg.scenario(float(fraction), kind, seed, cycles, spinup, ["biharmonic"], [])
    finally:
        EnSF._pseudo_observations = original
    a = np.array(records)                                  # (analyses, levels, 4)
    rms = lambda v: np.sqrt((v**2).mean(0)).round(3).tolist()  # noqa: E731
    return {"scenario": spec, "seed": seed, "analyses": f"{first}-{cycles - 1}", **result["rows"][0],
            "assumed_error": rms(a[:, :, 0]), "actual_error": rms(a[:, :, 1]),
            "ratio": (a[:, :, 0] / a[:, :, 1]).mean(0).round(3).tolist(),
            "pass1_spread_observed": rms(a[:, :, 2]), "pass1_error_observed": rms(a[:, :, 3])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="0.0625:arctan,0.25:linear")
    parser.add_argument("--seeds", default="7")
    parser.add_argument("--cycles", type=int, default=60)
    parser.add_argument("--spinup", type=int, default=30)
    parser.add_argument("--from-cycle", type=int, default=8, help="first analysis of the error statistics")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for seed in map(int, args.seeds.split(",")):
        for spec in args.scenarios.split(","):
            print(json.dumps(measure(spec, seed, args.cycles, args.spinup, args.from_cycle)), flush=True)


if __name__ == "__main__":
    main()
