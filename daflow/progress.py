"""Progress bars (rich, on stderr) shown only when stderr is a terminal and not ``--quiet``."""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def enabled() -> bool:
    return not _quiet and sys.stderr.isatty()


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=True)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a bar when enabled."""
    if not enabled():
        yield from items
        return
    with _progress() as bar:
        yield from bar.track(items, total=total, description=description)


@contextlib.contextmanager
def dask_progress(description: str) -> Iterator[None]:
    """A bar over the dask tasks computed inside the block."""
    if not enabled():
        yield
        return
    from dask.callbacks import Callback

    with _progress() as bar:
        task = bar.add_task(description, total=None)

        class _Bar(Callback):
            def _start_state(self, dsk, state):
                bar.update(task, total=sum(len(state[k]) for k in ("ready", "waiting", "running")))

            def _posttask(self, key, result, dsk, state, worker_id):
                bar.advance(task)

        with _Bar():
            yield
