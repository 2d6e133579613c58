"""Every ``daflow`` example of the README runs, in the README's order, in one folder (issue 19).

The fenced blocks without a language are shell; each line starting with ``daflow `` (with its
``\\`` continuations) is an example. A line with ``[...]`` optional parts is a synopsis, not an
example. An example whose input is the output of a later example (the synthetic observations of
the nature run made in the forecast section, the generative model trained in the train section)
waits for it; otherwise the order is the README's, so the examples must chain: the ensemble
starts where the observations begin, each product has its own name. The sample files are linked
in under the README's names; the user's own files it names (two GRIB files, a station CSV, an
error table, a blacklist) are written here. Run sizes are reduced (SIZES), nothing else changes.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from daflow.settings import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
DAFLOW = str(Path(sys.executable).with_name("daflow"))
OUTPUT_OPTIONS = ("-o", "--output", "--withheld", "--csv", "--plot")

# README name -> sample file (under DAFLOW_SAMPLE_DATA)
SAMPLES = {
    "synop.bufr": "obs/synop-2018112012-europe.bufr",
    "temp.bufr": "obs/temp-2008120812-global.bufr",
    "aircraft.bufr": "obs/aircraft-2021090915-spain.bufr",
    "feedback.odb": "obs/feedback-synop-2017041710.odb",
    "nam.grib2": "grib/nam.t00z.awp21100.tm00.grib2",
}

# the sizes of the long runs, reduced so that the whole README runs in minutes
SIZES = {
    "--steps 2000": "--steps 200",
    "--spinup 7200 --steps 21600 --output-every 36": "--spinup 360 --steps 1440 --output-every 36",
    "--epochs 60": "--epochs 1",
    "--surrogates 200": "--surrogates 20",
    "--steps 720 --output-every 36": "--steps 72 --output-every 36",
    "--steps 6 --members 8": "--steps 2 --members 2",
    "--obs sqg_obs.nc --members 8": "--obs sqg_obs.nc --members 2",
}


def examples(text: str) -> list[str]:
    """The example command lines of the README's shell blocks, in order."""
    found, fence, shell, lines = [], False, False, text.splitlines()
    k = 0
    while k < len(lines):
        line = lines[k]
        if line.startswith("```"):
            fence = not fence
            shell = fence and line.strip() == "```"
        elif shell and line.startswith("daflow "):
            command = line
            while command.rstrip().endswith("\\"):
                k += 1
                command = command.rstrip()[:-1] + " " + lines[k].strip()
            command = command.split(" #")[0].strip()
            if "[" not in command:
                found.append(command)
        k += 1
    return found


def outputs(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a in OUTPUT_OPTIONS]


def user_files(folder: Path, sample: Path) -> None:
    """The files the README names as the user's own."""
    import eccodes

    grib = sample / "grib" / "era5-2mt-2019-03-uk.grib"
    with open(grib, "rb") as f, open(folder / "a.grib", "wb") as a, open(folder / "b.grib", "wb") as b:
        count = 0
        while (handle := eccodes.codes_grib_new_from_file(f)) is not None:
            day = eccodes.codes_get(handle, "dataDate") % 100
            (a if day <= 15 else b).write(eccodes.codes_get_message(handle))  # two halves of the month
            eccodes.codes_release(handle)
            count += 1
    (folder / "stations.csv").write_text(
        "station,lat,lon,elevation,time,variable,value,error\n"
        "03772,51.48,-0.45,25,2018-11-20T12:00Z,t2m,281.4,1.0\n"
        "07149,48.72,2.38,89,2018-11-20T12:00Z,t2m,283.1,1.0\n")
    (folder / "errors.toml").write_text("[synop]\nt2m = 1.2\n")
    (folder / "bad-stations.txt").write_text("03894  # a station whose reports are not trusted\n")


@pytest.mark.slow
def test_every_readme_example_runs_in_order(sample_data):
    with tempfile.TemporaryDirectory(prefix="daflow-readme-") as folder:  # not pytest's rotated tmp_path: the run is long
        run_readme(sample_data, Path(folder))


def run_readme(sample_data: Path, tmp_path: Path) -> None:
    text = README.read_text()
    for long, short in SIZES.items():
        text = text.replace(long, short)
    pending = [shlex.split(line) for line in examples(text)]
    assert len(pending) > 25
    for name in os.listdir(sample_data / "grib") + os.listdir(sample_data / "enso") + os.listdir(sample_data / "netcdf"):
        for part in ("grib", "enso", "netcdf"):
            if (sample_data / part / name).exists():
                (tmp_path / name).symlink_to(sample_data / part / name)
    for name, path in SAMPLES.items():
        (tmp_path / name).symlink_to(sample_data / path)
    user_files(tmp_path, sample_data)
    made: set[str] = set()
    ran = []
    while pending:
        later = {out for args in pending for out in outputs(args)}
        ready = next((args for args in pending
                      if not any(a in later - set(outputs(args)) - made for a in args[1:])), None)
        assert ready is not None, f"the README's examples wait for each other: {[shlex.join(a) for a in pending]}"
        pending.remove(ready)
        result = subprocess.run([DAFLOW, *ready[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{shlex.join(ready)} (after {len(ran)} examples): exit {result.returncode}\n{result.stderr}"
        made.update(outputs(ready))
        ran.append(shlex.join(ready))


def test_readme_examples_are_found_and_sized():
    """The parsing the slow test relies on: synopses left out, continuations joined, every size reduction used."""
    text = README.read_text()
    found = examples(text)
    assert any(line.startswith("daflow causal ") and "--json -o c.nc" in line for line in found)
    assert not any("[" in line for line in found)
    assert all(re.search(re.escape(long), text) for long in SIZES), [k for k in SIZES if k not in text]
