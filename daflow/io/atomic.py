"""Atomic output: write to a hidden temporary file in the target folder, then rename.

``os.replace`` within one folder is atomic on POSIX, so a crash, a kill or a full disk never
leaves a partial file under the final name. A leftover ``.NAME.*.tmp`` after ``kill -9`` is never
mistaken for output.

Outputs are checked before any work (:func:`check_outputs`): an output that is one of the
inputs (same resolved path or same inode) is refused, as is one that exists and is not a regular
file (device, FIFO, socket: renaming over it would destroy it). A symbolic link is followed: its
target is replaced atomically and the link kept. The temporary files in flight are registered so
that a signal handler can remove them (:func:`remove_pending`) before the process exits.
"""
from __future__ import annotations

import contextlib
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from daflow.errors import OutputError

_PENDING: set[str] = set()  # temporary files being written, removed by remove_pending()
_GROUPS: list[list[tuple[Path, Path, Path]]] = []  # open output groups: (temporary, final, name shown)


def resolve_output(path: str | os.PathLike) -> Path:
    """The file an output path designates: symlinks followed; OutputError unless absent or a regular file."""
    path = Path(path)
    real = Path(os.path.realpath(path))
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real
    except OSError as err:
        raise OutputError(path, f"cannot create output: {err.strerror or err}") from err
    if stat.S_ISDIR(mode):
        raise OutputError(path, "is a directory, not an output file")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise OutputError(path, f"is {kind}; daflow writes regular files only (it would be replaced)")
    return real


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: the same resolved path, or the same device and inode."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs: Iterable[str | os.PathLike]) -> None:
    """OutputError (exit 73) for an output that exists and is not a regular file."""
    for path in outputs:
        resolve_output(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    A symlink ``path`` is followed (its target is replaced); an existing ``path`` that is not a
    regular file is refused. OSErrors (permissions, EFBIG from ``ulimit -f``, ENOSPC) become
    :class:`OutputError`.
    """
    shown = Path(path)
    path = resolve_output(shown)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _signals_blocked():  # a signal between creation and registration would leave the file
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            _PENDING.add(tmp_name)
        os.close(fd)
    except OSError as err:
        raise OutputError(shown, f"cannot create output: {err.strerror or err}") from err
    tmp = Path(tmp_name)
    deferred = False
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        if _GROUPS:  # renamed with the group's other outputs when it closes
            _GROUPS[-1].append((tmp, path, shown))
            deferred = True
        else:
            os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(shown, f"cannot write output: {err.strerror or err}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if not deferred:
            _PENDING.discard(tmp_name)


@contextlib.contextmanager
def output_group() -> Iterator[None]:
    """All outputs written by :func:`atomic_path` inside the block land together, or none does.

    Each is written to its temporary file as usual; the renames happen when the block succeeds.
    If the block fails (e.g. the third of three outputs cannot be written), every temporary file
    is removed and no final name is touched.
    """
    group: list[tuple[Path, Path, Path]] = []
    _GROUPS.append(group)
    try:
        yield
    except BaseException:
        for tmp, _, _ in group:
            tmp.unlink(missing_ok=True)
            _PENDING.discard(str(tmp))
        raise
    finally:
        _GROUPS.remove(group)
    try:
        for k, (tmp, path, shown) in enumerate(group):
            try:
                os.replace(tmp, path)
            except OSError as err:
                for later, _, _ in group[k:]:
                    later.unlink(missing_ok=True)
                raise OutputError(shown, f"cannot write output: {err.strerror or err}") from err
    finally:
        for tmp, _, _ in group:
            _PENDING.discard(str(tmp))


def remove_pending() -> int:
    """Remove the temporary files being written (from a signal handler); the number removed."""
    removed = 0
    for name in list(_PENDING):
        try:
            os.unlink(name)
            removed += 1
        except OSError:
            pass
        _PENDING.discard(name)
    return removed


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
