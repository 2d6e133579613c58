"""daflow causal beside tigramite (CMIknn, PCMCI) on the same data and settings.

1. One CMI value, T = 1000, 2-D conditioning, k = 8, rank transform: must agree to 1e-6.
2. One significance test with 500 local-permutation surrogates (5 shuffle neighbours), same T:
   times and ratio (same p-value resolution 1/501).
3. ENSO (real files): Nino3.4 target, WWV, u10 and Nino3.4 at lags 1-12; daflow's links beside
   tigramite PCMCI (CMIknn) on the same data.
Needs tigramite, numba and joblib (pip install tigramite numba joblib; not daflow dependencies).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from daflow.causal.estimators import knn_cmi, transform
from daflow.causal.framework import analyse
from daflow.causal.surrogates import cmi_test


def data(t, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((t, 2))
    x = z[:, 0] + rng.standard_normal(t)
    y = z[:, 1] + 0.3 * z[:, 0] + 0.1 * x + rng.standard_normal(t)
    return x, y, z


def tigramite_test(x, y, z, n):
    from tigramite.independence_tests.cmiknn import CMIknn

    ci = CMIknn(knn=8, shuffle_neighbors=5, transform="ranks", significance="shuffle_test", sig_samples=n,
                sig_blocklength=1, workers=-1, seed=1)
    arr, xyz = np.vstack([x, y, z.T]), np.array([0, 1, 2, 2])
    value = ci.get_dependence_measure(arr.copy(), xyz)
    return value, ci.get_shuffle_significance(arr.copy(), xyz, value)


def enso(surrogates):
    import xarray as xr
    from tigramite import data_processing as pp
    from tigramite.independence_tests.cmiknn import CMIknn
    from tigramite.pcmci import PCMCI

    from daflow.io.ingest import ingest
    from daflow.settings import sample_data_dir

    e = sample_data_dir() / "enso"
    ds = xr.merge([ingest([str(e / "XRO_indices_oras5.nc")], variables=("Nino34", "WWV")),
                   ingest([str(e / "iera5_u10m_160-180E_5--5N_n.dat")], name="u10")], join="inner").load()
    ds = ds.isel(time=np.isfinite(ds["u10"].values))
    names = ["Nino34", "WWV", "u10"]
    series = {n: ds[n].values.astype(float) for n in names}
    t0 = time.perf_counter()
    r = analyse(series, "Nino34", ["WWV", "u10", "Nino34"], list(range(1, 13)), surrogates=surrogates)
    t_daflow = time.perf_counter() - t0
    wwv = min((lk for lk in r.links if lk.driver == "WWV" and lk.lag <= 9), key=lambda lk: lk.p_value)
    frame = pp.DataFrame(np.stack([series[n] for n in names], axis=1), var_names=names)
    ci = CMIknn(knn=8, shuffle_neighbors=5, transform="ranks", significance="shuffle_test",
                sig_samples=surrogates, sig_blocklength=1, workers=-1, seed=1)
    t0 = time.perf_counter()
    res = PCMCI(dataframe=frame, cond_ind_test=ci, verbosity=0).run_pcmci(tau_min=1, tau_max=12, pc_alpha=0.2)
    t_tig = time.perf_counter() - t0
    p = res["p_matrix"][names.index("WWV"), names.index("Nino34"), 1:10]
    v = res["val_matrix"][names.index("WWV"), names.index("Nino34"), 1:10]
    best = int(np.argmin(p))
    return {"enso_daflow_wwv_lag": wwv.lag, "enso_daflow_wwv_p": wwv.p_value, "enso_daflow_wwv_unique": wwv.unique,
            "enso_daflow_unknown_share": r.unknown_share, "enso_daflow_certainty": r.certainty,
            "enso_daflow_parents": [f"{lk.driver}(t-{lk.lag})" for lk in r.parents], "enso_daflow_s": t_daflow,
            "enso_tigramite_wwv_lag": best + 1, "enso_tigramite_wwv_p": float(p[best]),
            "enso_tigramite_wwv_cmi": float(v[best]), "enso_tigramite_s": t_tig}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the ENSO comparison (about a minute)")
    ap.add_argument("--json", help="write the figures as one JSON object to this file")
    args = ap.parse_args()
    x, y, z = data(1000)
    tigramite_test(*data(200, 1), 10)                     # warm-up: numba compilation off the clock
    X, Y, Z = transform(x), transform(y), transform(z)
    cmi_test(X, Y, Z, n=10, seed=0)
    out = {}
    t0 = time.perf_counter()
    v_tig, p_tig = tigramite_test(x, y, z, 500)
    out["tigramite_test_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    v_daf, p_daf = cmi_test(X, Y, Z, n=500, seed=1)
    out["daflow_test_s"] = time.perf_counter() - t0
    out.update(cmi_tigramite=float(v_tig), cmi_daflow=float(knn_cmi(X, Y, Z, k=8)), p_tigramite=float(p_tig),
               p_daflow=p_daf, speedup=out["tigramite_test_s"] / out["daflow_test_s"])
    out["cmi_abs_diff"] = abs(out["cmi_tigramite"] - out["cmi_daflow"])
    if not args.quick:
        out.update(enso(200))
    for key, value in out.items():
        print(f"{key:28s} {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
