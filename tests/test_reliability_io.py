"""Issue 19, the ingest and message cases: joins, grids that are not states, GRIB filters, ecCodes'
stderr, binary files, reprs in messages, blow-up hints (each case fails on the old main)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

DAFLOW = str(Path(sys.executable).with_name("daflow"))
NAM = "nam.t00z.awp21100.tm00.grib2"


@pytest.fixture(scope="module")
def l96(tmp_path_factory):
    """An 8-variable Lorenz-96 start x0, a truth of 4 steps from it, full observations and a 5-member ensemble at x0."""
    from click.testing import CliRunner

    from daflow_cli.main import main

    d = tmp_path_factory.mktemp("l96io")

    def run(*args):
        result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output

    run("forecast", "--model", "lorenz96", "--param", "dim=8", "--init", "random", "--spinup", 100, "--seed", 1, "-o", d / "x0.nc")
    run("forecast", "--init", d / "x0.nc", "--steps", 4, "-o", d / "truth.nc")
    run("ingest", d / "truth.nc", "--observe", "--fraction", 1, "--seed", 2, "-o", d / "obs.nc")
    run("forecast", "--init", d / "x0.nc", "--members", 5, "--perturb", 1, "--seed", 3, "-o", d / "ens.nc")
    return d


def one_error_line(result, *needles: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- grids that are not states ---

def spectral_grib(path):
    import eccodes

    with open(path, "wb") as f:
        handle = eccodes.codes_grib_new_from_samples("sh_pl_grib2")
        eccodes.codes_set_values(handle, np.random.default_rng(0).normal(size=eccodes.codes_get(handle, "numberOfValues")))
        eccodes.codes_write(handle, f)
        eccodes.codes_release(handle)
    return path


def wrong_increment_grib(path):
    """12 latitudes from -90 to 90 declared 2 deg apart: ecCodes decodes -90, -88, ..., -70, 90."""
    import eccodes

    with open(path, "wb") as f:
        handle = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
        eccodes.codes_set_key_vals(handle, {
            "Ni": 10, "Nj": 12, "latitudeOfFirstGridPointInDegrees": -90.0, "latitudeOfLastGridPointInDegrees": 90.0,
            "longitudeOfFirstGridPointInDegrees": 0.0, "longitudeOfLastGridPointInDegrees": 27.0,
            "iDirectionIncrementInDegrees": 3.0, "jDirectionIncrementInDegrees": 2.0, "jScansPositively": 1})
        eccodes.codes_set_values(handle, np.arange(120, dtype=float))
        eccodes.codes_write(handle, f)
        eccodes.codes_release(handle)
    return path


def test_spherical_harmonics_are_refused_naming_the_grid_type(daflow, tmp_path):
    result = daflow("ingest", spectral_grib(tmp_path / "sh.grib"), "-o", tmp_path / "sh.nc")
    assert result.exit_code == 65
    one_error_line(result, "sh.grib", "gridType sh", "spherical-harmonic")
    assert not (tmp_path / "sh.nc").exists()


def test_inconsistent_regular_grid_is_refused(daflow, tmp_path):
    result = daflow("ingest", wrong_increment_grib(tmp_path / "w.grib"), "-o", tmp_path / "w.nc")
    assert result.exit_code == 65
    one_error_line(result, "w.grib", "inconsistent regular_ll grid", "-70, 90")


@pytest.mark.parametrize("name", ["spherical_harmonics.grib", "regular_ll_wrong_increment.grib"])
def test_cfgrib_sample_files_that_are_not_states(daflow, sample_data, tmp_path, name):
    src = sample_data / "grib" / name
    if not src.is_file():
        pytest.skip(f"{src} is absent (cfgrib's tests/sample-data; the generated equivalents are tested above)")
    result = daflow("ingest", src, "-o", tmp_path / "x.nc")
    assert result.exit_code == 65
    one_error_line(result, name, "gridType sh" if "spherical" in name else "inconsistent regular_ll grid")


def test_regular_and_gaussian_grids_still_pass(daflow, sample_data, tmp_path):
    for name in ("regular_ll_msl.grib", "ecmwf-2t-2018112012-n160.grib"):
        assert daflow("ingest", sample_data / "grib" / name, "-o", tmp_path / f"{name}.nc").exit_code == 0


# --- nam.grib2: every suggested filter works ---

def suggested_filters(text: str) -> list[list[str]]:
    """Each '--filter K=V [--filter K=V]' choice of a message, as argument lists."""
    import re

    return [re.findall(r"--filter (\S+?=[^\s,;)]+)", choice) for choice in re.split(r", |: |; ", text) if "--filter" in choice]


def test_every_filter_suggested_for_nam_works(daflow, sample_data, tmp_path):
    src = sample_data / "grib" / NAM
    first = daflow("ingest", src, "-o", tmp_path / "n.nc")
    assert first.exit_code == 65
    tried = 0
    pending = suggested_filters(first.stderr)
    assert len(pending) >= 10
    seen: set[tuple[str, ...]] = set()
    while pending:
        pairs = pending.pop()
        if tuple(pairs) in seen:
            continue
        seen.add(tuple(pairs))
        args = [a for p in pairs for a in ("--filter", p)]
        result = daflow("ingest", src, *args, "-o", tmp_path / "n.nc")
        assert result.exit_code == 0, (pairs, result.stderr)
        assert xr.open_dataset(tmp_path / "n.nc").data_vars
        tried += 1
        pending += suggested_filters(result.stderr)  # skipped variables name the filter that reads them
    assert tried == 19  # the 12 level types and the 7 variables they skip (absv, u10, v10, pli, lftx4, cape, cin)


def test_filter_matching_several_level_types_lists_whole_choices(daflow, sample_data, tmp_path):
    result = daflow("ingest", sample_data / "grib" / NAM, "--filter", "shortName=cape", "-o", tmp_path / "c.nc")
    assert result.exit_code == 65
    line = one_error_line(result, "--filter typeOfLevel=surface --filter shortName=cape",
                          "--filter typeOfLevel=pressureFromGroundLayer --filter shortName=cape")
    assert not line.rstrip().endswith(":")
    for pairs in suggested_filters(line):
        assert daflow("ingest", sample_data / "grib" / NAM, *[a for p in pairs for a in ("--filter", p)],
                      "-o", tmp_path / "c.nc").exit_code == 0


def test_cfgrib_name_as_short_name_points_to_the_grib_short_name(daflow, sample_data, tmp_path):
    src = sample_data / "grib" / NAM
    result = daflow("ingest", src, "--filter", "shortName=u10", "-o", tmp_path / "u.nc")
    assert result.exit_code == 65
    one_error_line(result, "--filter shortName=10u")
    assert daflow("ingest", src, "--filter", "shortName=10u", "-o", tmp_path / "u.nc").exit_code == 0
    assert list(xr.open_dataset(tmp_path / "u.nc").data_vars) == ["u10"]
    result = daflow("ingest", src, "--filter", "typeOfLevel=nowhere", "-o", tmp_path / "u.nc")
    one_error_line(result, "typeOfLevel takes", "isobaricInhPa")


# --- nothing raw on stderr ---

def damaged_grib(src: Path, path: Path, at: int, garbage: bytes) -> Path:
    data = bytearray(src.read_bytes())
    data[at:at + len(garbage)] = garbage
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("at, garbage, says", [(40, b"\0\0\0\0", "Invalid section number"),  # ECCODES ERROR lines
                                               (30, b"\xff\xff", "no valid date")])            # ECCODES WARNING, no time
def test_eccodes_lines_stay_off_stderr(sample_data, tmp_path, at, garbage, says):
    bad = damaged_grib(sample_data / "grib" / "regular_ll_msl.grib", tmp_path / "bad.grib", at, garbage)
    run = subprocess.run([DAFLOW, "ingest", bad, "-o", tmp_path / "b.nc"], capture_output=True, text=True)
    assert run.returncode == 65, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("daflow ingest: error: ") and "bad.grib" in lines[0], run.stderr
    assert says in lines[0] and "ECCODES" not in run.stderr
    assert list(tmp_path.iterdir()) == [bad]


def test_random_binary_file_is_named_not_echoed(daflow, tmp_path):
    noise = np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8).tobytes().replace(b"GRIB", b"grib")
    (tmp_path / "noise.bin").write_bytes(noise.replace(b"BUFR", b"bufr").replace(b"CDF", b"cdf"))
    result = daflow("ingest", tmp_path / "noise.bin", "-o", tmp_path / "n.nc")
    assert result.exit_code == 65
    line = one_error_line(result, "noise.bin", "binary content")
    assert line.isprintable() and "\ufffd" not in line


def test_unknown_operator_is_shown_as_plain_text(daflow, l96, tmp_path):
    obs = xr.open_dataset(l96 / "obs.nc").load()
    obs["operator"][:] = "cubic"
    obs.to_netcdf(tmp_path / "cubic.nc")
    result = daflow("assimilate", "--method", "etkf", "--init", l96 / "ens.nc", "--obs", tmp_path / "cubic.nc",
                    "-o", tmp_path / "a.nc")
    assert result.exit_code == 65
    one_error_line(result, "'cubic'")
    assert "np.str_" not in result.stderr


# --- "try a smaller time step" only for blow-ups ---

def test_time_step_hint_only_for_a_real_blow_up(daflow, l96, tmp_path):
    """An analysis that fails (R^-1/2 of 1e200 overflows S S^T, and the LETKF's eigh fails) is not a model
    blow-up: no time-step hint, nothing written. (An error of 1e-100 gave a NaN analysis on an earlier
    install and an analysis equal to the observations on a fresh one: it no longer breaks anything.)
    A failed decomposition inside a method is an internal error (70), as the README's exit codes say."""
    obs = xr.open_dataset(l96 / "obs.nc").load()
    obs["error_std"][:] = 1e-200
    obs.to_netcdf(tmp_path / "tiny.nc")
    for mode in ("--init", "--background"):
        result = daflow("assimilate", "--method", "letkf", mode, l96 / "ens.nc", "--obs", tmp_path / "tiny.nc",
                        "-o", tmp_path / "a.nc")
        assert result.exit_code == 70
        line = one_error_line(result, "internal error", "eigh")
        assert "time step" not in line and "--dt" not in line
        assert not (tmp_path / "a.nc").exists()
    result = daflow("forecast", "--init", l96 / "x0.nc", "--dt", 2.0, "--steps", 200, "-o", tmp_path / "f.nc")
    assert result.exit_code == 65
    one_error_line(result, "blew up", "smaller time step")


# --- joins never pad with NaN unless asked ---

@pytest.fixture(scope="module")
def era(sample_data, tmp_path_factory):
    from daflow.api import ingest
    from daflow.io.contract import write_dataset

    d = tmp_path_factory.mktemp("era")
    ens = ingest(sample_data / "grib" / "era5-levels-members.grib").load()
    write_dataset(ens, d / "ens10.nc", "state")
    write_dataset(ens.isel(member=slice(0, 5)), d / "ens5.nc", "state")
    write_dataset(ens.isel(member=0), d / "m0.nc", "state")
    return d


def test_mismatched_members_are_refused(daflow, era, tmp_path):
    result = daflow("ingest", era / "ens10.nc", era / "ens5.nc", "-o", tmp_path / "j.nc")
    assert result.exit_code == 65
    one_error_line(result, "10 member", "5", "pad")
    assert not (tmp_path / "j.nc").exists()


def test_same_variables_on_shifted_grids_are_refused(daflow, era, tmp_path):
    ens = xr.open_dataset(era / "ens5.nc")
    later = ens.assign_coords(time=ens["time"] + np.timedelta64(2, "D"), lon=ens["lon"] + 1.5)
    later.to_netcdf(tmp_path / "shifted.nc")
    result = daflow("ingest", era / "ens5.nc", tmp_path / "shifted.nc", "-o", tmp_path / "j.nc")
    assert result.exit_code == 65
    one_error_line(result, "differ in lon")


def test_same_variables_join_along_time_in_order(daflow, era, tmp_path):
    ens = xr.open_dataset(era / "ens5.nc")
    ens.assign_coords(time=ens["time"] + np.timedelta64(2, "D")).to_netcdf(tmp_path / "later.nc")
    assert daflow("ingest", tmp_path / "later.nc", era / "ens5.nc", "-o", tmp_path / "j.nc").exit_code == 0
    out = xr.open_dataset(tmp_path / "j.nc")
    assert out.sizes["time"] == 8 and out.indexes["time"].is_monotonic_increasing
    np.testing.assert_array_equal(out["t"].values[:, 4:], ens["t"].values)


def test_different_times_need_an_explicit_join(daflow, sample_data, tmp_path):
    xro = sample_data / "enso" / "XRO_indices_oras5.nc"
    assert daflow("ingest", sample_data / "grib" / "era5-2mt-2019-03-uk.grib", "-o", tmp_path / "t2m.nc").exit_code == 0
    result = daflow("ingest", xro, tmp_path / "t2m.nc", "-o", tmp_path / "j.nc")
    assert result.exit_code == 65
    one_error_line(result, "times differ", "--join inner keeps the 1 common", "--join outer")
    assert daflow("ingest", xro, tmp_path / "t2m.nc", "--join", "inner", "-o", tmp_path / "j.nc").exit_code == 0
    inner = xr.open_dataset(tmp_path / "j.nc")
    assert inner["time"].values.tolist() == [np.datetime64("2019-03-01", "ns").astype(int)] or inner.sizes["time"] == 1
    assert np.isfinite(inner["t2m"].values).all() and np.isfinite(inner["Nino34"].values).all()
    assert daflow("ingest", xro, tmp_path / "t2m.nc", "--join", "outer", "-o", tmp_path / "u.nc").exit_code == 0
    assert xr.open_dataset(tmp_path / "u.nc").sizes["time"] == 552 + 744 - 1


# --- a dimension no command reads; selecting along one ---

def test_month_dimension_is_kept_with_a_warning_and_selectable(daflow, sample_data, tmp_path):
    # ingest converts a climatology as it is (the foundation check ingests this file), but says that no
    # other command reads the month dimension and how to select one
    src = sample_data / "netcdf" / "eraint_uvz.nc"
    result = daflow("ingest", src, "-o", tmp_path / "e.nc")
    assert result.exit_code == 0
    warning = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and "dimension month (1, 7)" in warning[0] and "--sel month=1" in warning[0]
    assert xr.open_dataset(tmp_path / "e.nc").sizes["month"] == 2
    assert daflow("ingest", src, "--sel", "month=7", "--var", "u", "-o", tmp_path / "e.nc").exit_code == 0
    out = xr.open_dataset(tmp_path / "e.nc")
    assert out["u"].dims == ("level", "lat", "lon")
    with xr.open_dataset(src) as raw:
        np.testing.assert_array_equal(out["u"].values, raw["u"].sel(month=7).values[:, ::-1, :])
    result = daflow("ingest", src, "--sel", "month=3", "-o", tmp_path / "e.nc")
    assert result.exit_code == 65
    one_error_line(result, "no such month; it takes 1, 7")


def test_a_member_of_an_ensemble_can_be_observed(daflow, era, tmp_path):
    result = daflow("ingest", era / "ens10.nc", "--var", "t", "--observe", "--seed", 1, "-o", tmp_path / "o.nc")
    assert result.exit_code == 65 and "--sel member=K" in result.stderr
    assert daflow("ingest", era / "ens10.nc", "--sel", "member=3", "--var", "t", "--observe", "--error-std", 1e-9, "--seed", 1,
                  "-o", tmp_path / "o.nc").exit_code == 0
    obs = xr.open_dataset(tmp_path / "o.nc")
    truth = xr.open_dataset(era / "ens10.nc")["t"].sel(member=3)
    k = 0
    value = truth.sel(time=obs["time"].values[k], level=obs["level"].values[k], lat=obs["lat"].values[k], lon=obs["lon"].values[k])
    assert abs(float(obs["value"].values[k]) - float(value)) < 1e-6


# --- an ensemble from any gridded state, analysed by the methods that do not forecast ---

def test_forecast_builds_an_ensemble_of_an_ingested_state(daflow, era, tmp_path):
    result = daflow("forecast", "--init", era / "m0.nc", "--members", 20, "--perturb", 0.5, "--seed", 4, "-o", tmp_path / "e.nc")
    assert result.exit_code == 0, result.output
    ens, m0 = xr.open_dataset(tmp_path / "e.nc"), xr.open_dataset(era / "m0.nc").isel(time=[-1])
    assert ens["t"].dims == ("member", "time", "level", "lat", "lon") and ens.sizes["member"] == 20
    noise = np.concatenate([(ens[v] - m0[v]).values.ravel() for v in ("t", "z")])
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 0.5) < 0.01
    again = daflow("forecast", "--init", era / "m0.nc", "--members", 20, "--perturb", 0.5, "--seed", 4, "-o", tmp_path / "f.nc")
    assert again.exit_code == 0 and (xr.open_dataset(tmp_path / "f.nc")["t"] == ens["t"]).all()
    result = daflow("forecast", "--init", era / "m0.nc", "--members", 5, "--steps", 3, "-o", tmp_path / "g.nc")
    assert result.exit_code == 65
    one_error_line(result, "no model can run it forward", "--steps 0")


@pytest.mark.parametrize("method", ["etkf", "letkf", "enkf", "enkf-n", pytest.param("ensf", marks=pytest.mark.slow)])
def test_perturbed_ingested_ensemble_is_analysable(daflow, era, tmp_path, method):
    assert daflow("ingest", era / "m0.nc", "--var", "t", "--observe", "--fraction", 0.05, "--error-std", 1, "--seed", 9,
                  "-o", tmp_path / "o.nc").exit_code == 0
    assert daflow("forecast", "--init", era / "m0.nc", "--members", 10, "--perturb", 1, "--seed", 2,
                  "-o", tmp_path / "e.nc").exit_code == 0
    result = daflow("assimilate", "--method", method, "--background", tmp_path / "e.nc", "--obs", tmp_path / "o.nc",
                    "--seed", 1, "-o", tmp_path / "a.nc")
    assert result.exit_code == 0, result.output
    an = xr.open_dataset(tmp_path / "a.nc")
    assert np.abs(an["obs_oma"].values).mean() < np.abs(an["obs_omb"].values).mean()


def test_state_options_are_refused_for_observation_files(daflow, sample_data, tmp_path):
    src = sample_data / "obs" / "aircraft-2021090915-spain.bufr"
    for option in (["--sel", "member=0"], ["--join", "outer"]):
        result = daflow("ingest", src, *option, "-o", tmp_path / "o.nc")
        assert result.exit_code == 2 and option[0] in result.output, result.output
        assert not (tmp_path / "o.nc").exists()
