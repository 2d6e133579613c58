"""Errors that carry a sysexits(3) exit code and a one-line, file-naming message.

The library raises these; ``cli/`` maps them to exit codes. Nothing here imports click.
"""
from __future__ import annotations

import os


class DaflowError(Exception):
    """Base class: ``str(err)`` is the one line shown to the user."""

    exit_code = 70  # EX_SOFTWARE

    def __init__(self, source: str | os.PathLike | None, message: str):
        self.source = None if source is None else os.fspath(source)
        self.message = message
        super().__init__(f"{self.source}: {message}" if self.source else message)


class DataError(DaflowError):
    """The input exists but its content is wrong (EX_DATAERR)."""

    exit_code = 65


class InputMissing(DaflowError):
    """An input file does not exist or cannot be read (EX_NOINPUT)."""

    exit_code = 66


class OutputError(DaflowError):
    """The output cannot be created or written (EX_CANTCREAT)."""

    exit_code = 73


class TemporaryFailure(DaflowError):
    """Safe to retry later, e.g. another run holds a lock (EX_TEMPFAIL)."""

    exit_code = 75


class DaflowWarning(UserWarning):
    """Something the user should know that does not stop the command (one line on stderr)."""


class OptionError(DaflowError, ValueError):
    """An option value the operation cannot take (usage error, exit 2); ``option`` names it as a keyword.

    The library names the keyword (``loc_radius``); the CLI turns it into the flag (``--loc-radius``).
    """

    exit_code = 2  # EX_USAGE as click reports it

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(None, message)
