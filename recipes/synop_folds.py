"""The SYNOP cross-validation of recipes/synop.mk.

synop_folds.py split OBS.nc K DIR: stations with crc32(id) % 10 == K go to DIR/verify.nc, the rest to DIR/assim.nc.
synop_folds.py summary DIR: pooled O-B and O-A at the withheld stations over the reported folds (3-9) and the
tuning folds (0-2), per quadrant (50N, 20E) of the reported folds, per fold, and maps of the pooled O-B and O-A
(DIR/departures.png).
"""
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

TUNING = (0, 1, 2)


def split(path, fold, out):
    import xarray as xr

    d = xr.open_dataset(path).load()
    held = np.array([zlib.crc32(str(s).encode()) % 10 == int(fold) for s in d["station"].values])
    Path(out).mkdir(parents=True, exist_ok=True)
    d.isel(obs=np.flatnonzero(held)).to_netcdf(f"{out}/verify.nc")
    d.isel(obs=np.flatnonzero(~held)).to_netcdf(f"{out}/assim.tmp.nc")
    Path(f"{out}/assim.tmp.nc").rename(f"{out}/assim.nc")


def stats(d):
    return f"{len(d):5d} {d.mean():+7.3f} {np.sqrt((d**2).mean()):7.3f} {d.std():7.3f}"


def summary(folder):
    folder = Path(folder)
    rows = []
    for k in range(10):
        bg = pd.read_csv(folder / f"fold{k}" / "bg.csv")
        an = pd.read_csv(folder / f"fold{k}" / "an.csv")
        rows.append((k, bg, an))
    print("SYNOP 2 m temperature 2018-11-20 12Z, ECMWF N160 48 h forecast; 10-fold cross-validation by station")
    print("O-B and O-A at the withheld stations (count, bias = mean(O-F) K, RMSE K, std K)")
    print(f"{'folds':<14}{'O-B':>30}{'O-A':>30}{'RMSE ratio':>12}")
    for label, chosen in (("reported 3-9", [r for r in rows if r[0] not in TUNING]), ("tuning 0-2", [r for r in rows if r[0] in TUNING])):
        b = pd.concat([r[1] for r in chosen])["departure"]
        a = pd.concat([r[2] for r in chosen])["departure"]
        print(f"{label:<14}{stats(b):>30}{stats(a):>30}{np.sqrt((a**2).mean() / (b**2).mean()):>12.3f}")
    reported_b = pd.concat([r[1] for r in rows if r[0] not in TUNING])
    reported_a = pd.concat([r[2] for r in rows if r[0] not in TUNING])
    lon_b = (reported_b["lon"] + 180) % 360 - 180
    for name, north, east in (("region NW", True, False), ("region NE", True, True), ("region SW", False, False), ("region SE", False, True)):
        # quadrants split at 50N and 20E; reported folds only
        mask = ((reported_b["lat"] >= 50) == north) & ((lon_b >= 20) == east)
        b, a = reported_b["departure"][mask], reported_a["departure"][mask.to_numpy()]
        print(f"{name:<14}{stats(b):>30}{stats(a):>30}{np.sqrt((a**2).mean() / (b**2).mean()):>12.3f}")
    for k, bg, an in rows:
        print(f"{'fold ' + str(k):<14}{stats(bg['departure']):>30}{stats(an['departure']):>30}"
              f"{np.sqrt((an['departure']**2).mean() / (bg['departure']**2).mean()):>12.3f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 6), sharey=True)
    for ax, which, title in ((axes[0], 1, "O-B"), (axes[1], 2, "O-A")):
        t = pd.concat([r[which] for r in rows if r[0] not in TUNING])
        sc = ax.scatter((t["lon"] + 180) % 360 - 180, t["lat"], c=t["departure"], cmap="RdBu_r", vmin=-5, vmax=5, s=10)
        ax.set_title(f"{title} at withheld stations (folds 3-9): rmse {np.sqrt((t['departure']**2).mean()):.2f} K")
        ax.set_xlabel("longitude")
    axes[0].set_ylabel("latitude")
    fig.colorbar(sc, ax=axes, label="K")
    fig.savefig(folder / "departures.png", dpi=90)


if __name__ == "__main__":
    {"split": lambda: split(*sys.argv[2:5]), "summary": lambda: summary(sys.argv[2])}[sys.argv[1]]()
