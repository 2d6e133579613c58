"""The one representation of time: float model time in ``time_units``, or datetime64[ns].

A state's clock is either dimensionless/seconds model time (float64, CF ``units`` = the model's
``time_units``: ``"1"`` for Lorenz, ``"s"`` for SQG) or calendar time (numpy datetime64[ns]) when
a run was given a calendar start. For dimensionless Lorenz time, 1 unit = 5 days (Lorenz 1996:
0.05 units ~ 6 hours). Every comparison and difference of times in daflow goes through here.
"""
from __future__ import annotations

import numpy as np

from daflow.errors import DataError, OptionError

SECONDS_PER_TIME_UNIT = {"s": 1.0, "1": 5 * 86400.0}
TOLERANCE = 1e-9


def is_calendar(time: object) -> bool:
    """True for datetime64 times (scalars or arrays)."""
    return isinstance(time, np.datetime64) or np.asarray(time).dtype.kind == "M"


def parse_start(text: str) -> np.datetime64:
    """An ISO-8601 calendar time (a trailing Z allowed) as datetime64[ns]; OptionError for other text."""
    try:
        return np.datetime64(text.rstrip("Z"), "ns")
    except ValueError:
        raise OptionError("start", f"{text!r} is not an ISO-8601 time (e.g. 2020-01-01T00:00Z)") from None


def elapsed(start: object, stop: object, time_units: str) -> float:
    """stop - start in model time units (times float or datetime64)."""
    if is_calendar(start):
        seconds = (np.datetime64(stop, "ns") - np.datetime64(start, "ns")) / np.timedelta64(1, "s")  # type: ignore[call-overload]
        return float(seconds) / SECONDS_PER_TIME_UNIT[time_units]
    return float(stop) - float(start)  # type: ignore[arg-type]


def before(a: object, b: object) -> bool:
    """a < b (model-time differences below 1e-9 count as equal)."""
    if is_calendar(a):
        return bool(np.datetime64(a, "ns") < np.datetime64(b, "ns"))  # type: ignore[call-overload]
    return float(a) < float(b) - TOLERANCE  # type: ignore[arg-type]


def same_time(a: object, b: object) -> bool:
    return not before(a, b) and not before(b, a)


def steps_between(start: object, stop: object, dt: float, time_units: str, source: object = None) -> int:
    """Number of dt steps from ``start`` to ``stop``; DataError unless a whole non-negative number."""
    gap = elapsed(start, stop, time_units)
    steps = int(round(gap / dt))
    if steps < 0 or abs(steps * dt - gap) > 1e-6 * max(dt, abs(gap)):
        raise DataError(_name(source), f"time {stop} is not a whole number of dt={dt} steps after {start}")
    return steps


def frame_times(start: object, count: int, interval: float, time_units: str) -> np.ndarray:
    """``count`` times ``start, start + interval, ...`` (interval in model units)."""
    return step_times(start, np.arange(count), interval, time_units)


def step_times(start: object, steps: np.ndarray, interval: float, time_units: str) -> np.ndarray:
    """The times ``start + k interval`` of the step numbers k in ``steps`` (interval in model units)."""
    offsets = np.asarray(steps) * interval
    if is_calendar(start):
        seconds = np.round(offsets * SECONDS_PER_TIME_UNIT[time_units] * 1e9).astype("timedelta64[ns]")
        return np.datetime64(start, "ns") + seconds  # type: ignore[call-overload, no-any-return]
    return float(start) + offsets  # type: ignore[arg-type, no-any-return]


def seconds(time: object) -> float:
    """A time as float seconds: calendar times since 1970, model times as they are."""
    value = np.asarray(time)
    if np.issubdtype(value.dtype, np.datetime64):
        return float(value.astype("datetime64[ns]").astype(np.int64) / 1e9)
    return float(value)


def _name(source: object) -> str | None:
    return None if source is None else str(source)
