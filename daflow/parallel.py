"""Running dask work on an existing dask.distributed cluster.

Inside ``dask_scheduler(address)`` every dask computation (ingest's streamed write, score's
blocks) goes to the cluster at ``address``; without an address dask's local threads are used.
The workers must see the same files as the client (a shared file system).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from daflow.errors import OptionError, TemporaryFailure


@contextlib.contextmanager
def dask_scheduler(address: str | None) -> Iterator[None]:
    if address is None:
        yield
        return
    from distributed import Client
    from distributed.comm.addressing import parse_address, parse_host_port

    try:  # before Client(): a failed constructor leaves itself as dask's default scheduler
        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls", "ws", "wss"):
            parse_host_port(location)
    except ValueError as err:  # not an address at all: a usage error
        raise OptionError("scheduler", f"{address!r} is not a scheduler address such as tcp://host:8786 ({err})") from None
    try:
        client = Client(address, timeout="5s", set_as_default=True)
    except (OSError, TimeoutError) as err:
        raise TemporaryFailure(None, f"cannot reach the dask scheduler at {address} ({err})") from err
    with client:
        yield
