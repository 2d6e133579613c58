"""Issue 19: nothing lost, nothing hung, nothing silently wrong (each case fails on the old main)."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DAFLOW = str(Path(sys.executable).with_name("daflow"))


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def l96(tmp_path_factory, daflow_process):
    """A Lorenz-96 truth, full observations of it and a 10-member ensemble."""
    d = tmp_path_factory.mktemp("l96")
    daflow_process("forecast", "--model", "lorenz96", "--param", "dim=40", "--init", "random", "--spinup", 500, "--dt", 0.05,
                   "--steps", 0, "--seed", 3, "-o", d / "x0.nc")
    daflow_process("forecast", "--init", d / "x0.nc", "--steps", 20, "-o", d / "truth.nc")
    daflow_process("ingest", d / "truth.nc", "--observe", "--fraction", 1, "--error-std", 1, "--seed", 5, "-o", d / "obs.nc")
    daflow_process("forecast", "--init", d / "x0.nc", "--members", 10, "--perturb", 1, "--seed", 7, "-o", d / "ens.nc")
    return d


# --- outputs: never an input, never a special file; symlinks followed ---

def test_output_equal_to_an_input_is_refused_before_work(daflow, l96, tmp_path):
    obs = tmp_path / "obs.nc"
    obs.write_bytes((l96 / "obs.nc").read_bytes())
    before = digest(obs)
    result = daflow("assimilate", "--method", "letkf", "--init", l96 / "ens.nc", "--obs", obs, "-o", obs)
    assert result.exit_code == 2
    assert "same file" in result.output and "--obs" in result.output
    assert digest(obs) == before


def test_output_hard_linked_to_an_input_is_refused(daflow, l96, tmp_path):
    os.link(l96 / "truth.nc", tmp_path / "alias.nc")
    before = digest(l96 / "truth.nc")
    result = daflow("score", "--truth", l96 / "truth.nc", "--forecast", l96 / "truth.nc", "-o", tmp_path / "alias.nc")
    assert result.exit_code == 2
    assert digest(l96 / "truth.nc") == before


def test_two_outputs_naming_one_file_are_refused(daflow, l96, tmp_path):
    result = daflow("score", "--truth", l96 / "truth.nc", "--forecast", l96 / "truth.nc", "-o", tmp_path / "s.nc",
                    "--csv", tmp_path / "s.nc")
    assert result.exit_code == 2
    assert not (tmp_path / "s.nc").exists()


def test_fifo_output_is_refused_and_kept(daflow, l96, tmp_path):
    fifo = tmp_path / "pipe.nc"
    os.mkfifo(fifo)
    result = daflow("forecast", "--init", l96 / "x0.nc", "--steps", 1, "-o", fifo)
    assert result.exit_code == 73
    assert "FIFO" in result.output
    assert fifo.is_fifo()


def test_device_output_is_refused(daflow, l96):
    result = daflow("forecast", "--init", l96 / "x0.nc", "--steps", 1, "-o", "/dev/null")
    assert result.exit_code == 73
    assert Path("/dev/null").is_char_device()


def test_symlink_output_replaces_the_target_and_keeps_the_link(daflow, l96, tmp_path):
    target = tmp_path / "sub" / "target.nc"
    target.parent.mkdir()
    target.write_bytes(b"")
    link = tmp_path / "link.nc"
    link.symlink_to(target)
    result = daflow("forecast", "--init", l96 / "x0.nc", "--steps", 1, "-o", link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and target.stat().st_size > 0
    assert sorted(p.name for p in target.parent.iterdir()) == ["target.nc"]


def test_forecast_init_directory_is_a_usage_error(daflow, tmp_path):
    result = daflow("forecast", "--init", tmp_path, "--steps", 1, "-o", tmp_path / "y.nc")
    assert result.exit_code == 2


# --- signals: no temporary file, prompt exit 130 / 143, also while the NetCDF is written ---

@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("moment", ["computing", "writing"])
def test_signal_leaves_nothing_and_exits_promptly(tmp_path, sig, code, moment):
    out = tmp_path / "big.nc"
    steps = 4000 if moment == "computing" else 30
    process = subprocess.Popen([DAFLOW, "forecast", "--model", "lorenz96", "--param", "dim=20000", "--init", "random",
                                "--members", "4", "--spinup", "0", "--steps", str(steps), "--seed", "1", "-o", str(out)],
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if moment == "computing" and _torch_loaded(process.pid):  # torch is imported inside the command
            time.sleep(1.0)
            break
        tmp = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        if moment == "writing" and tmp and tmp[0].stat().st_size > 1_000_000:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before the signal could be sent"
    process.send_signal(sig)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=20)
    assert time.monotonic() - sent < 10
    assert process.returncode == code, stderr
    assert f"interrupted by {sig.name}" in stderr
    assert list(tmp_path.iterdir()) == []


def _torch_loaded(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
