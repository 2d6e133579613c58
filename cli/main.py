"""The ``daflow`` command: one subcommand per module, each file-in/file-out."""
from __future__ import annotations

import click

from daflow import __version__
from daflow.io.history import set_command_line
from daflow_cli.assimilate import assimilate
from daflow_cli.causal import causal
from daflow_cli.forecast import forecast
from daflow_cli.ingest import ingest
from daflow_cli.score import score
from daflow_cli.train import train


class DaflowGroup(click.Group):
    """Records the raw command line for the files' ``history`` attribute."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        set_command_line(args)
        return super().parse_args(ctx, args)


@click.group(cls=DaflowGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="daflow")
def main() -> None:
    """daflow: operational data assimilation from the command line.

    Every subcommand reads and writes CF-NetCDF files. Exit codes follow sysexits: 65 bad input
    data, 66 missing input, 70 internal error, 73 output cannot be written, 75 retry later.
    """


main.add_command(causal)
main.add_command(ingest)
main.add_command(forecast)
main.add_command(assimilate)
main.add_command(score)
main.add_command(train)
