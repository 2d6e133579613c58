"""The Python API: the CLI's verbs on xarray objects in memory.

Every function takes the CLI's long options as keyword arguments (``--loc-radius 4`` is
``loc_radius=4``; a repeatable KEY=VALUE option such as ``--param`` takes a dict), an
``xarray.Dataset`` wherever the CLI takes a file (a path is accepted too and read with the
data contract's checks), and returns the dataset the CLI would write. The CLI commands are
these functions plus file writing, so the same seed gives the same bytes both ways::

    import daflow
    x0 = daflow.forecast(model="lorenz96", param={"dim": 40}, init="random", seed=3)
    truth = daflow.forecast(init=x0, steps=300)
    obs = daflow.ingest(truth, observe=True, fraction=1.0, error_std=1.0, seed=5)
    ens = daflow.forecast(init=x0, members=8, perturb=1.0, seed=7)
    an = daflow.assimilate(method="letkf", init=ens, obs=obs, inflation=1.04, loc_radius=4)
    scores = daflow.score(truth=truth, forecast=an, burn_in=50)
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import xarray as xr

from daflow.errors import DataError, OptionError

DatasetLike = Union[xr.Dataset, str, "os.PathLike[str]"]
STATE_KINDS = ("state", "analysis")


def open(path: str | os.PathLike[str], kinds: Iterable[str] | None = None) -> xr.Dataset:  # noqa: A001 (daflow.open, like xr.open_dataset)
    """A daflow (or any NetCDF) file as a dataset; ``kinds`` restricts its ``daflow_kind``."""
    from daflow.io.contract import open_dataset

    return open_dataset(path, kinds=kinds)


def _read(value: DatasetLike, kinds: Sequence[str] | None, dims: Sequence[str] = (), load: bool = False) -> tuple[xr.Dataset, str | None]:
    """(dataset, name for errors): a path is opened with the contract's checks."""
    if isinstance(value, xr.Dataset):
        return value, None
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"expected an xarray Dataset or a file path, not {type(value).__name__}")
    from daflow.io.contract import open_dataset

    ds = open_dataset(value, kinds=kinds, dims=dims)
    return (ds.load() if load else ds), os.fspath(value)


def _dtype(name: str | None) -> Any:
    import torch

    if name is None:
        return None
    if name not in ("float64", "float32"):
        raise OptionError("dtype", f"dtype must be float64 or float32, not {name!r}")
    return getattr(torch, name)


def forecast(init: DatasetLike, model: str | None = None, param: Mapping[str, Any] | None = None, members: int | None = None,
             perturb: float = 0.0, spinup: int | None = None, dt: float | None = None, steps: int = 0, output_every: int = 1,
             start: str | None = None, checkpoint: str | None = None, sample_steps: int | None = None,
             sequence_parallel: int | None = None, dtype: str | None = None,
             seed: int | None = None, split: int = 1, scheduler: str | None = None) -> xr.Dataset:
    """``daflow forecast``: a model run from ``init`` (a state dataset or ``"random"``) as a state dataset.

    With ``checkpoint`` (a trained model directory, ``model="storm"``) the generative model samples the forecast.
    An option the chosen model's run does not take (``sample_steps`` for Lorenz-96, ``perturb`` for
    storm) is an OptionError: what each run takes is read from its function's signature.
    """
    from daflow.models import GENERATIVE_MODEL, MODELS
    from daflow.parallel import dask_scheduler

    if (model == GENERATIVE_MODEL) != (checkpoint is not None):
        raise OptionError("checkpoint", f"checkpoint is needed by, and only by, the generative model ({GENERATIVE_MODEL})")
    options = {"param": param, "members": members, "perturb": perturb, "spinup": spinup, "dt": dt, "output_every": output_every,
               "start": start, "sample_steps": sample_steps, "sequence_parallel": sequence_parallel, "dtype": dtype,
               "split": split, "scheduler": scheduler}
    if checkpoint is not None:
        from daflow.nn.generative import forecast as generative_forecast

        given = _taken_options(generative_forecast, options, f"the generative model ({GENERATIVE_MODEL})")
        ds, name = _read(init, STATE_KINDS)
        given["members"] = given.get("members") or 1
        out = generative_forecast(checkpoint, ds, steps, seed=seed, source=name, **given)
        _check_finite_forecast(out, checkpoint)
        return out
    from daflow.models.run import forecast as run_forecast

    _taken_options(run_forecast, options, f"model {model}" if model else f"a {', '.join(MODELS)} run", RUN_KEYWORDS)
    if isinstance(init, str) and init == "random":
        ds_or_random: xr.Dataset | str = "random"
        name = None
    else:
        ds_or_random, name = _read(init, STATE_KINDS, dims=("time",))
        from daflow.models.base import ATTR_NAME

        if ATTR_NAME not in ds_or_random.attrs:  # a gridded state no daflow model wrote (e.g. ingested ERA5)
            from daflow.models.run import perturbed_ensemble

            if model is not None or param or steps or spinup or dt is not None:
                raise DataError(name, "has no daflow_model attributes: no model can run it forward; with --steps 0 "
                                      "(no --model, --param, --spinup or --dt) --members N --perturb S builds an ensemble of it")
            return perturbed_ensemble(ds_or_random, members, perturb, seed, start, source=name)

    with dask_scheduler(scheduler):
        return run_forecast(ds_or_random, model, dict(param or {}), members, perturb, spinup, dt, steps, output_every, seed,
                            start, _dtype(dtype), groups=split, source=name)


RUN_KEYWORDS = {"param": "params", "split": "groups", "scheduler": "groups"}  # forecast's keyword -> the model run's argument


def _taken_options(run: Any, options: dict[str, Any], who: str, keywords: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The options given (not None, not forecast's default, not empty) that ``run`` takes; OptionError
    naming the first one it does not take (its argument, through ``keywords``, is not in its signature)."""
    import inspect

    defaults = inspect.signature(forecast).parameters
    given = {k: v for k, v in options.items() if v is not None and v != defaults[k].default and not (k == "param" and not v)}
    takes = set(inspect.signature(run).parameters)
    refused = [k for k in given if (keywords or {}).get(k, k) not in takes]
    if refused:
        raise OptionError(refused[0], f"{who} does not take {', '.join(refused)}")
    return given


def _check_finite_forecast(ds: xr.Dataset, source: object) -> None:
    """DataError naming the first time where a forecast stops being finite (the blow-up check of every model)."""
    import numpy as np

    for name, var in ds.data_vars.items():
        if "time" not in var.dims:
            continue
        bad = ~np.isfinite(var.values)
        if bad.any():
            axis = var.dims.index("time")
            first = int(np.flatnonzero(bad.any(axis=tuple(i for i in range(bad.ndim) if i != axis)))[0])
            raise DataError(str(source), f"the forecast of {name} is NaN/Inf from time {ds['time'].values[first]} "
                                         "(check the checkpoint's normalisation and weights)")


def ingest(*sources: DatasetLike, var: Sequence[str] = (), filter: Mapping[str, str] | None = None,  # noqa: A002 (the CLI's --filter)
           bbox: tuple[float, float, float, float] | None = None, time: str | None = None, chunks: Mapping[str, Any] | None = None,
           name: str | None = None, rename: Mapping[str, str] | None = None, obs_errors: str | None = None,
           blacklist: str | None = None, withhold: float | None = None, observe: bool = False, fraction: float = 0.05,
           error_std: float = 1.0, pattern: str = "fixed", operator: str = "identity", every: int = 1, seed: int | None = None,
           scheduler: str | None = None, join: str = "exact", sel: Mapping[str, str] | None = None) -> Any:
    """``daflow ingest``: sources (files of any supported format, or datasets) joined into the data contract.

    ``observe=True`` draws synthetic observations H(x) + N(0, error_std^2) of the state instead.
    Reports (BUFR, ODB-2, station CSV) become observations; ``withhold`` (a fraction of the
    stations) returns (assimilated, withheld) observation datasets. ``join`` (exact, inner, outer) lines
    up the times of files of different variables; ``sel`` ({DIM: VALUE}) picks one value along a dimension.
    """
    from daflow.io.ingest import ingest as ingest_sources, select_bbox, select_time, select_values
    from daflow.parallel import dask_scheduler

    if not sources:
        raise OptionError("sources", "give at least one source")
    variables = tuple([var] if isinstance(var, str) else var)
    with dask_scheduler(scheduler):
        datasets = [s for s in sources if isinstance(s, xr.Dataset)]
        ds: xr.Dataset
        if len(datasets) == len(sources):
            label = "dataset"
            ds = datasets[0] if len(datasets) == 1 else xr.concat(datasets, dim="time")
            if rename:
                ds = ds.rename(dict(rename))
            if not observe and variables:
                ds = ds[list(variables)]
            if sel:
                ds = select_values(ds, dict(sel), label)
            if time:
                ds = select_time(ds, time, label)
            if bbox:
                ds = select_bbox(ds, bbox, label)
        elif datasets:
            raise OptionError("sources", "give either files or datasets, not both")
        else:
            label = ", ".join(os.fspath(s) for s in sources)  # type: ignore[arg-type]
            ds = ingest_sources(sources, variables=() if observe else variables, filters=dict(filter or {}),  # type: ignore[arg-type]
                                bbox=bbox, time=time, chunks=dict(chunks) if chunks else None, name=name,
                                renames=dict(rename or {}), errors=obs_errors, blacklist=blacklist, join=join,
                                select=dict(sel or {}))
        if withhold is not None:
            from daflow.obs.reports import withhold_stations

            return withhold_stations(ds, withhold, seed, label)
        if observe:
            from daflow.obs.synthetic import observe as draw

            return draw(ds, fraction=fraction, error_std=error_std, seed=seed, pattern=pattern, operator=operator,
                        every=every, variables=variables, source=label)
        return ds


def assimilate(method: str, obs: DatasetLike, init: DatasetLike | None = None, background: DatasetLike | None = None,
               climatology: DatasetLike | None = None, save_background: bool = False, checkpoint: str | None = None,
               dtype: str = "float64", seed: int | None = None, **settings: Any) -> xr.Dataset:
    """``daflow assimilate``: cycle from ``init`` or analyse ``background`` once with ``method``.

    ``settings`` are the method's options (``inflation``, ``rtps``, ``loc_radius``, ``eps_b``, ...;
    None leaves the method's default); an option the method does not take is an OptionError.
    The result holds the analysis ensemble and per-observation O-B, O-A and H(x) mean and spread.
    """
    given = {k: v for k, v in settings.items() if v is not None}
    from daflow.da import GENERATIVE
    from daflow.registry import load

    if (method in GENERATIVE) != (checkpoint is not None):
        raise OptionError("checkpoint", f"a checkpoint (a trained model directory) is needed by, and only by, {', '.join(GENERATIVE)}")
    if checkpoint is not None:
        import inspect

        generative_assimilate = load(GENERATIVE, method, "method")

        accepted = set(inspect.signature(generative_assimilate).parameters) - {"checkpoint", "obs", "init", "background", "names", "seed"}
        extra = sorted(set(given) - accepted)
        if extra:
            raise OptionError(extra[0], f"method {method} does not take {', '.join(extra)}")
        obs_ds, obs_name = _read(obs, ("observations",), ("obs",), load=True)
        states = {k: _read(v, STATE_KINDS) if v is not None else (None, None) for k, v in (("init", init), ("background", background))}
        return generative_assimilate(checkpoint, obs_ds, background=states["background"][0], init=states["init"][0], seed=seed,
                                     names={"obs": obs_name, "init": states["init"][1], "background": states["background"][1]},
                                     **given)
    from daflow.da.cycle import assimilate as run

    obs_ds, obs_name = _read(obs, ("observations",), ("obs",), load=True)
    names: dict[str, object] = {"obs": obs_name}
    datasets: dict[str, xr.Dataset | None] = {}
    for key, value in (("init", init), ("background", background), ("climatology", climatology)):
        if value is None:
            datasets[key] = None
            continue
        datasets[key], names[key] = _read(value, STATE_KINDS)
    if given.get("orography") is not None:  # a model orography file or dataset (OI's surface analysis)
        given["orography"], names["orography"] = _read(given["orography"], None)
    return run(method, obs_ds, init=datasets["init"], background=datasets["background"], climatology=datasets["climatology"],
               save_background=save_background, dtype=_dtype(dtype), names=names, seed=seed, **given)


def score(truth: DatasetLike, forecast: DatasetLike, obs: DatasetLike | None = None, var: Sequence[str] = (),
          burn_in: int = 0, scheduler: str | None = None, mask_nonfinite: bool = False) -> xr.Dataset:
    """``daflow score``: the ``scores`` dataset of ``forecast`` against ``truth`` (RMSE, bias, spread, CRPS, ...).

    NaN/Inf in either is a DataError unless ``mask_nonfinite`` (then left out of every metric alike)."""
    from daflow.parallel import dask_scheduler
    from daflow.score.verify import verify

    truth_ds, truth_name = _read(truth, STATE_KINDS)
    forecast_ds, forecast_name = _read(forecast, STATE_KINDS)
    obs_ds, obs_name = _read(obs, ("observations",), ("obs",)) if obs is not None else (None, None)
    with dask_scheduler(scheduler):
        return verify(truth_ds, forecast_ds, obs_ds, burn_in=burn_in, variables=tuple([var] if isinstance(var, str) else var),
                      names=(truth_name or "truth", forecast_name or "forecast", obs_name or "obs"),  # type: ignore[arg-type]
                      mask_nonfinite=mask_nonfinite)


def departures(forecast: DatasetLike, obs: DatasetLike, var: str | Sequence[str] = ()) -> xr.Dataset:
    """``daflow score --obs`` without a truth: observation minus ``forecast`` interpolated to each report
    (a ``scores`` dataset along ``obs``: platform, variable, pressure band, departure, ...); :func:`summary`
    gives the count, bias, RMSE and standard deviation per platform and group."""
    from daflow.score.obsspace import departures as table

    state, state_name = _read(forecast, STATE_KINDS)
    obs_ds, obs_name = _read(obs, ("observations",), ("obs",))
    variables = [var] if isinstance(var, str) else list(var)
    rows = table(state[variables] if variables else state, obs_ds.load(), names=(state_name or "forecast", obs_name or "obs"))
    return rows.to_xarray().rename(index="obs")


def summary(scores: xr.Dataset) -> dict[str, Any]:
    """The figures of a ``scores`` dataset (what ``daflow score --json`` prints): time means against a truth,
    or the count, bias, RMSE and std of the departures of :func:`departures` per platform and group."""
    if "departure" in scores:
        from daflow.score.obsspace import summarise as departure_summary

        return departure_summary(scores.to_dataframe())
    from daflow.score.verify import summary as summarise

    return summarise(scores)


def train(data: DatasetLike, history: int, epochs: int, output: str | os.PathLike[str], var: str | None = None,
          config: str | None = None, resume: bool = False, seed: int | None = None, sequence_parallel: int = 1) -> dict[str, Any]:
    """``daflow train``: fit the generative model to ``data``; writes the model directory ``output``, returns its config."""
    from daflow.nn.data import read_series
    from daflow.nn.training import train as run_training

    ds, name = _read(data, STATE_KINDS)
    series = read_series(ds, var, name or "data")
    return run_training(series, history, epochs, os.fspath(output), config, resume, source=name or "data",
                        sequence_parallel=sequence_parallel, seed=seed)


def causal(*inputs: DatasetLike, target: str, drivers: str | Sequence[str] | None = None, lags: str | Sequence[int] = "1-12",
           estimator: str = "ksg", k: int = 8, surrogates: int = 200, pc_alpha: float = 0.2, block_length: int | None = None,
           local: bool = False, seed: int = 0) -> xr.Dataset:
    """``daflow causal``: parents of ``target`` among lagged drivers, their unique and joint information (the ``causal`` dataset)."""
    return causal_analysis(*inputs, target=target, drivers=drivers, lags=lags, estimator=estimator, k=k, surrogates=surrogates,
                           pc_alpha=pc_alpha, block_length=block_length, local=local, seed=seed).dataset


@dataclass
class CausalAnalysis:
    """What ``daflow causal`` writes (``dataset``), prints (``result.summary()``) and plots."""

    result: Any
    dataset: xr.Dataset
    series: xr.Dataset
    lags: list[int]
    drivers: list[str]


def causal_analysis(*inputs: DatasetLike, target: str, drivers: str | Sequence[str] | None = None, lags: str | Sequence[int] = "1-12",
                    estimator: str = "ksg", k: int = 8, surrogates: int = 200, pc_alpha: float = 0.2,
                    block_length: int | None = None, local: bool = False, seed: int = 0) -> CausalAnalysis:
    """:func:`causal` with the result object, the joined series, lags and drivers (for the summary and the plot)."""
    from daflow.causal.dataset import check_series, series_from_datasets, to_dataset
    from daflow.causal.framework import analyse

    if not inputs:
        raise OptionError("inputs", "give at least one series dataset")
    lag_list = parse_lags(lags) if isinstance(lags, str) else list(lags)
    parts, labels = [], []
    for i, value in enumerate(inputs):
        ds, name = _read(value, ("state",), ("time",))
        parts.append(ds)
        labels.append(name or f"dataset {i}")
    ds = series_from_datasets(parts, labels)
    listed = (drivers.split(",") if isinstance(drivers, str) else list(drivers)) if drivers else list(map(str, ds.data_vars))
    names = list(dict.fromkeys(name.strip() for name in listed))  # a driver listed twice would explain away itself
    source = ", ".join(labels)
    check_series(ds, target, names, lag_list, source)
    series = {n: ds[n].values.astype(float) for n in dict.fromkeys([target, *names])}
    result = analyse(series, target, names, lag_list, estimator=estimator, k=k, surrogates=surrogates, pc_alpha=pc_alpha,
                     method="block" if block_length else "local", block_length=block_length or 1, local=local, seed=seed,
                     source=source)
    return CausalAnalysis(result, to_dataset(result, lag_list, names), ds, lag_list, names)


def parse_lags(text: str) -> list[int]:
    """Lags from "N" or "FIRST-LAST" (time steps, from 1)."""
    try:
        first, _, last = text.partition("-")
        lags = list(range(int(first), int(last or first) + 1))
    except ValueError:
        raise OptionError("lags", "expected N or FIRST-LAST, e.g. 1-12") from None
    if not lags or lags[0] < 1:
        raise OptionError("lags", "lags start at 1")
    return lags
