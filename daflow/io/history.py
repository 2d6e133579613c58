"""The ``history`` line of a command: UTC time and the command line as a user would retype it.

Kept apart from the contract so that the CLI records its arguments without importing xarray.
"""
from __future__ import annotations

import datetime as dt
import shlex
import sys
from collections.abc import Iterable

_command: str | None = None


def set_command_line(args: Iterable[str]) -> None:
    """Record the command being run (the CLI calls this with its raw arguments)."""
    global _command
    _command = shlex.join(["daflow", *args])


def command_line() -> str:
    """The command being run, as a user would retype it; ``--seed N`` added when it drew seed N
    (:mod:`daflow.seeding`), so that retyping it repeats the run."""
    from daflow.seeding import drawn_seed

    command = _command or shlex.join(["daflow", *sys.argv[1:]])
    seed = drawn_seed()
    return command if seed is None else f"{command} --seed {seed}"


def history_line(command: str | None = None) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{stamp} {command or command_line()}"
