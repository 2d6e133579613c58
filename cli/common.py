"""What every subcommand shares: --debug/--quiet, error-to-exit-code mapping, warnings, --json."""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import sys
import threading
import warnings

import click
from click.core import ParameterSource

from daflow.errors import DaflowError, DaflowWarning, OptionError
from daflow.io.atomic import check_outputs, output_group, remove_pending, same_file
from daflow.progress import set_quiet
from daflow.seeding import seed_scope
from daflow.threads import set_threads


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that refuses NaN (it passes every bound) and +-Inf (it passes a one-sided one)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class OutputPath(click.Path):
    """A path the command writes. Every other ``click.Path`` parameter is an input; an output that
    names an input (or another output) is refused before any work (exit 2)."""


def output_path(**kwargs) -> OutputPath:
    return OutputPath(**kwargs)


def check_paths(ctx: click.Context) -> None:
    """Refuse (exit 2) an output that is an input or another output; (exit 73) one that is not a regular file."""
    outputs, inputs = [], []
    for param in ctx.command.params:
        if isinstance(param.type, click.Path):
            value = ctx.params.get(param.name)
            for v in (value if isinstance(value, (tuple, list)) else [value]):
                if v is not None:
                    (outputs if isinstance(param.type, OutputPath) else inputs).append((v, param))
    for k, (out, param) in enumerate(outputs):
        for other, other_param in [*inputs, *outputs[:k]]:
            if same_file(out, other):
                raise click.UsageError(f"output {out} ({param.get_error_hint(ctx)}) is the same file as {other} "
                                       f"({other_param.get_error_hint(ctx)}): refusing to overwrite it")
    check_outputs([out for out, param in outputs if not param.type.dir_okay])


@contextlib.contextmanager
def signals_handled(command: str):
    """SIGINT and SIGTERM remove the temporary output being written and end the process at once.

    Exit 128 + signal number (130, 143). ``os._exit`` skips the interpreter's unwinding, which
    could otherwise deadlock: a KeyboardInterrupt inside xarray's ``to_netcdf`` runs
    ``store.close``, which waits for a lock held by the interrupted write.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        removed = remove_pending()
        note = "; removed the partial output" if removed else ""
        if os.isatty(2):
            os.write(2, b"\x1b[?25h\n")  # a progress bar may have hidden the cursor
        os.write(2, f"daflow {command}: error: interrupted by {signal.Signals(signum).name}{note}\n".encode())
        os._exit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def common_options(func):
    """Add ``--quiet``, ``--debug`` and ``--threads`` (:mod:`daflow.threads`) and run the command under :func:`handle_errors`."""

    @click.option("--quiet", is_flag=True, help="No progress bars or warnings on stderr.")
    @click.option("--debug", is_flag=True, help="Show a traceback on errors.")
    @click.option("--threads", type=click.IntRange(min=1),
                  help="CPU threads for torch [default: free cores by the load average; 1 for small ensembles].")
    @functools.wraps(func)
    def wrapper(*args, quiet: bool, debug: bool, threads: int | None, **kwargs):
        set_quiet(quiet)
        set_threads(threads)
        ctx = click.get_current_context()
        command = ctx.info_name
        with warnings.catch_warnings(), signals_handled(command), seed_scope():
            warnings.simplefilter("ignore")  # library noise (xarray, numpy) stays off the user's terminal
            if not quiet:
                warnings.simplefilter("default", DaflowWarning)
            warnings.showwarning = _one_line_warning(command)
            try:
                check_paths(ctx)
                with output_group():  # a command's outputs land together or not at all
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
    """One JSON object on stdout; NaN and infinities become null (JSON has no such numbers)."""
    click.echo(json.dumps(_finite(data), allow_nan=False, default=str))


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a NumPy scalar
        return _finite(value.item())
    return value


def given_flags(*names: str) -> list[str]:
    """The flags (``--burn-in``) of the parameters ``names`` (``burn_in``) that the command line set, not their defaults."""
    ctx = click.get_current_context()
    return [f"--{name.replace('_', '-')}" for name in names if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE]


def parse_pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    """('KEY=VALUE', ...) -> dict, as click.BadParameter (exit 2) when malformed."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        out[key.strip()] = value.strip()
    return out
