"""What every subcommand shares: --debug/--quiet, error-to-exit-code mapping, warnings, --json."""
from __future__ import annotations

import functools
import json
import sys
import warnings

import click

from daflow.errors import DaflowError, DaflowWarning, OptionError
from daflow.progress import set_quiet


def common_options(func):
    """Add ``--quiet`` and ``--debug`` and run the command under :func:`handle_errors`."""

    @click.option("--quiet", is_flag=True, help="No progress bars or warnings on stderr.")
    @click.option("--debug", is_flag=True, help="Show a traceback on errors.")
    @functools.wraps(func)
    def wrapper(*args, quiet: bool, debug: bool, **kwargs):
        set_quiet(quiet)
        command = click.get_current_context().info_name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # library noise (xarray, numpy) stays off the user's terminal
            if not quiet:
                warnings.simplefilter("default", DaflowWarning)
            warnings.showwarning = _one_line_warning(command)
            try:
                return func(*args, **kwargs)
            except OptionError as err:  # a library keyword is a CLI flag: usage error, exit 2
                raise click.UsageError(f"--{err.option.replace('_', '-')}: {err}") from None
            except DaflowError as err:
                if debug:
                    raise
                _fail(command, str(err), err.exit_code)
            except click.ClickException:  # usage errors found inside a command: click's exit 2
                raise
            except KeyboardInterrupt:
                _fail(command, "interrupted", 130)
            except Exception as err:  # an unexpected failure: EX_SOFTWARE, traceback with --debug
                if debug:
                    raise
                _fail(command, f"internal error: {type(err).__name__}: {err} (rerun with --debug for a traceback)", 70)

    return wrapper


def _fail(command: str, message: str, code: int) -> None:
    click.echo(f"daflow {command}: error: {message.splitlines()[0] if message else ''}", err=True)
    sys.exit(code)


def _one_line_warning(command: str):
    def show(message, category, filename, lineno, file=None, line=None):
        click.echo(f"daflow {command}: warning: {str(message).splitlines()[0]}", err=True)

    return show


scheduler_option = click.option(
    "--scheduler", metavar="ADDRESS", help="Run the dask work on this dask.distributed scheduler (e.g. tcp://host:8786).")


def print_json(data: dict) -> None:
    """One JSON object on stdout; NaN becomes null."""
    click.echo(json.dumps(data, allow_nan=False, default=str))


def parse_pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    """('KEY=VALUE', ...) -> dict, as click.BadParameter (exit 2) when malformed."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        out[key.strip()] = value.strip()
    return out
