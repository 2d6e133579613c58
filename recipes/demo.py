"""``make demo``: every engine of daflow in a few minutes, through the Python API, in memory.

1. Lorenz-96 OSSE (DAPPER's sakov2008 setting: dim 40, dt 0.05, all variables observed, R = I):
   LETKF, ETKF, OI and EnSF cycled through the one cycle of :mod:`daflow.core.cycle`.
2. SQG (two-lid surface quasi-geostrophic turbulence, the EnSF papers' testbed) with 6.25% of the
   grid observed: EnSF with and without inpainting, and the LETKF (a short, coarse run).
3. storm: a small generative model trained on the SQG nature run, then cycled as an analysis.
4. ENSO: the causal drivers of Nino3.4 on the real index files (skipped with a reason when the
   sample data folder is absent).

One summary table, with the peers' published figures beside daflow's where there are any, and
PNGs under the output folder (``demo-out/`` by default). The SQG and storm runs are short and
coarse (the point is that every engine runs end to end; benchmarks/README.md holds the real figures).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import daflow
from daflow.settings import sample_data_dir

ROWS: list[tuple[str, str, str, str, float]] = []   # (experiment, method, daflow figure, peers' figure, seconds)


def record(experiment: str, method: str, scores, published: str, seconds: float, key: str = "rmse") -> None:
    figure = daflow.summary(scores)[key]
    ROWS.append((experiment, method, "n/a" if figure is None else f"{key} {figure:.3f}", published, seconds))
    print(f"  {experiment:<22} {method:<20} {ROWS[-1][2]:<14} peers: {published:<28} {seconds:6.1f} s", flush=True)


def lorenz96(out: Path) -> None:
    print("Lorenz-96 OSSE: dim 40, 300 cycles of dt 0.05, R = I, burn-in 50 (EnSF: the first 60 cycles, burn-in 20)", flush=True)
    x0 = daflow.forecast(model="lorenz96", param={"dim": 40}, init="random", spinup=1000, dt=0.05, steps=0, seed=3)
    truth = daflow.forecast(init=x0, steps=300)
    obs = daflow.ingest(truth, observe=True, fraction=1.0, error_std=1.0, seed=5)
    short = obs.isel(obs=obs["time"].values <= 60 * 0.05 + 1e-9)
    runs = [("letkf", dict(members=8, seed=7), dict(inflation=1.04, loc_radius=4), obs, 50, "DAPPER LETKF N=7: 0.22"),
            ("etkf", dict(members=20, seed=6), dict(inflation=1.02), obs, 50, "DAPPER ETKF N=20: 0.18"),
            ("oi", None, dict(climatology=truth), obs, 50, "DAPPER OI: 0.95"),
            ("ensf", dict(members=20, seed=6), dict(seed=1, ensf_steps=50), short, 20, "-")]
    from daflow.score.plots import plot_scores

    for method, ensemble, options, observations, burn_in, published in runs:
        init = x0 if ensemble is None else daflow.forecast(init=x0, perturb=1.0, **ensemble)
        start = time.perf_counter()
        analysis = daflow.assimilate(method=method, init=init, obs=observations, **options)
        scores = daflow.score(truth=truth, forecast=analysis, burn_in=burn_in)
        record("lorenz96", method, scores, published, time.perf_counter() - start)
        if method == "letkf":
            plot_scores(scores, out / "lorenz96-letkf.png")


def sqg(out: Path, cycles: int) -> tuple:
    print(f"SQG 32 x 32 x 2: {cycles} 4-hourly cycles, 6.25% of the grid observed (error 1 K), 8 members", flush=True)
    nature = daflow.forecast(model="sqg", param={"N": 32}, init="random", spinup=1000, steps=12 * (40 + cycles), output_every=12,
                             seed=31)
    train, truth = nature.isel(time=slice(0, 40)), nature.isel(time=slice(40, None))   # storm learns from the first 40 frames
    obs = daflow.ingest(truth.isel(time=slice(2, None)), observe=True, fraction=0.0625, pattern="fixed", error_std=1.0, seed=32)
    ens = daflow.forecast(init=truth.isel(time=[1]), members=8, perturb=2.0, seed=33)   # perturbed copies at the start
    burn = max(1, cycles // 3)
    from daflow.score.plots import plot_scores

    for label, method, options, published in (
            ("ensf biharmonic", "ensf", dict(inpaint="biharmonic", seed=1), "Bao et al.: inpainting helps"),
            ("ensf no inpainting", "ensf", dict(inpaint="none", seed=1), "-"),
            ("letkf", "letkf", dict(loc_radius=4, rtps=0.5), "-")):
        start = time.perf_counter()
        analysis = daflow.assimilate(method=method, init=ens, obs=obs, **options)
        scores = daflow.score(truth=truth, forecast=analysis, obs=obs, burn_in=burn)
        record("sqg 6.25%", label, scores, published, time.perf_counter() - start)
        if method == "ensf" and options["inpaint"] == "biharmonic":
            plot_scores(scores, out / "sqg-ensf.png")
    return train, truth, obs, burn


def storm(out: Path, train, truth, obs, burn: int, epochs: int) -> None:
    print(f"storm: a small diffusion transformer trained {epochs} epochs on 40 earlier SQG frames, then cycled with MMPS "
          "guidance (this shows the engine end to end, not its skill: benchmarks/README.md has trained figures)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "arch.toml"
        config.write_text("[architecture]\nwidth = 32\ndepth = 2\nheads = 2\npatch = 8\n[training]\nbatch_size = 8\n")
        start = time.perf_counter()
        daflow.train(train, history=2, epochs=epochs, output=Path(tmp) / "model", config=str(config))
        analysis = daflow.assimilate(method="storm", checkpoint=str(Path(tmp) / "model"), init=truth.isel(time=slice(0, 2)),
                                     obs=obs, members=8, seed=1, sample_steps=8)
        scores = daflow.score(truth=truth, forecast=analysis, obs=obs, burn_in=burn)
        clim = float(train["theta"].std("time").mean())
        record("sqg 6.25%", "storm", scores, f"- (climatological std {clim:.1f} K)", time.perf_counter() - start)


def enso(out: Path) -> None:
    folder = sample_data_dir() / "enso"
    if not folder.is_dir():
        print(f"ENSO causal analysis skipped: the sample data folder {folder} is absent (set DAFLOW_SAMPLE_DATA)")
        return
    print("ENSO: causal drivers of Nino3.4 (WWV, western-Pacific u10, SOI, its own past), lags 1-6 months", flush=True)
    from daflow.causal.dataset import plot

    start = time.perf_counter()
    xro = daflow.ingest(folder / "XRO_indices_oras5.nc", var=["Nino34", "WWV"]).load()
    u10 = daflow.ingest(folder / "iera5_u10m_160-180E_5--5N_n.dat", name="u10").load()
    soi = daflow.ingest(folder / "soi.long.csv").load()
    from daflow.api import causal_analysis

    run = causal_analysis(xro, u10, soi, target="Nino34", drivers="WWV,u10,SOI,Nino34", lags="1-6", surrogates=50,
                          estimator="gaussian")
    plot(run.result, run.lags, run.drivers, out / "enso-causal.png", run.series)
    summary = run.result.summary()
    parents = [f"{link['driver']}(t-{link['lag']})" for link in summary["links"] if link["selected"]]
    seconds = time.perf_counter() - start
    ROWS.append(("enso nino3.4", "causal (gaussian)", f"{len(parents)} parents", "WWV leads Nino3.4 (Jin 1997)", seconds))
    print(f"  nino3.4 parents: {', '.join(parents)}; certainty {summary['certainty']:.3f} ({seconds:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-out", help="folder of the PNGs")
    parser.add_argument("--sqg-cycles", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    lorenz96(out)
    train, truth, obs, burn = sqg(out, args.sqg_cycles)
    storm(out, train, truth, obs, burn, args.epochs)
    enso(out)
    print(f"\nsummary ({time.perf_counter() - start:.0f} s in all; PNGs in {out}/)")
    print(f"{'experiment':<14} {'method':<20} {'daflow':<14} {'peers (published)':<46} {'seconds':>7}")
    for experiment, method, figure, published, seconds in ROWS:
        print(f"{experiment:<14} {method:<20} {figure:<14} {published:<46} {seconds:7.1f}")
    if not list(out.glob("*.png")):
        raise SystemExit("no PNG written")


if __name__ == "__main__":
    main()
