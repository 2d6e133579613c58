"""The seed of a command's random draws: the one given, or one drawn and recorded.

Without ``--seed`` a command draws one seed from the operating system's entropy the first time
it needs one (:func:`resolve_seed`); every random draw of that command then uses it, as they all
would use a given ``--seed``, and the output's ``history`` line ends in ``--seed N``
(:mod:`daflow.io.history`), so retyping that line repeats the run. The CLI opens one
:func:`seed_scope` per command; outside a scope (the Python API) each call without a seed draws
a fresh one and :func:`drawn_seed` gives the last.
"""
from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

_scope: list[int | None] | None = None  # [the command's drawn seed] inside a seed_scope
_last: int | None = None


@contextlib.contextmanager
def seed_scope() -> Iterator[None]:
    """One command: the seeds drawn inside are one seed."""
    global _scope
    previous, _scope = _scope, [None]
    try:
        yield
    finally:
        _scope = previous


def resolve_seed(seed: int | None) -> int:
    """``seed``, or the command's drawn seed (drawn now if it has none yet)."""
    if seed is not None:
        return seed
    drawn = _scope[0] if _scope is not None else None
    if drawn is None:
        drawn = secrets.randbelow(2**31)
    record_seed(drawn)
    return drawn


def record_seed(seed: int) -> None:
    """Record ``seed`` as the one this command drew (also for a seed agreed between torchrun ranks)."""
    global _last
    _last = seed
    if _scope is not None:
        _scope[0] = seed


def drawn_seed() -> int | None:
    """The seed the current command drew (None when it was given one or drew none)."""
    return _scope[0] if _scope is not None else _last
