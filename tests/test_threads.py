"""The threads policy (daflow.threads): --threads on every command, the load-based default, and one
thread for small model work unless --threads says otherwise."""
from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner

from daflow import threads
from daflow.core.state import threads_for
from daflow_cli.main import main


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    threads.set_threads(None)
    torch.set_num_threads(before)


def test_default_is_the_free_cores_and_at_least_one(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    expected = max(1, min(cores, round(cores - os.getloadavg()[0])))
    assert 1 <= threads.default_threads() <= cores
    assert abs(threads.default_threads() - expected) <= 1  # the load average may move in between
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert threads.set_threads(None) >= 1 and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_small_work_runs_on_one_thread_unless_threads_were_given():
    torch.set_num_threads(2)
    with threads_for(threads.SMALL_WORK - 1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with threads_for(threads.SMALL_WORK):
        assert torch.get_num_threads() == 2
    threads.set_threads(2)
    with threads_for(10):
        assert torch.get_num_threads() == 2


def test_every_command_takes_threads(tmp_path):
    runner = CliRunner()
    for command in main.commands.values():
        assert "--threads" in [opt for p in command.params for opt in p.opts], command.name
    out = tmp_path / "l96.nc"
    result = runner.invoke(main, ["forecast", "--model", "lorenz96", "--init", "random", "--spinup", "10", "--steps", "2",
                                  "--threads", "1", "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == 1 and threads.explicit() == 1 and out.exists()
    bad = runner.invoke(main, ["forecast", "--model", "lorenz96", "--init", "random", "--threads", "0", "-o", str(tmp_path / "x.nc")])
    assert bad.exit_code == 2 and "--threads" in bad.output
