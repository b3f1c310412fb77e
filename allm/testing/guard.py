"""A guard against accidental real calls: any HTTP request to a provider raises.

::

    from allm.testing import block_requests, RequestBlocked

    with block_requests():
        allm.generate(fake_engine(["hi"]), "Hello")          # the Fake: fine
        allm.generate(local_engine, "Hello")                 # a loopback server: fine
        allm.generate(openai_engine, "Hello")                # raises RequestBlocked

What passes: the Fake (it makes no request), replays (:mod:`allm.testing.recorder`),
servers on this machine (``localhost``, ``127.0.0.0/8``, ``::1``) and hosts named in
``allow_hosts``. Everything else raises :class:`RequestBlocked` before a byte is sent,
naming the provider and the URL (never a key). Guards nest; the innermost decides, so
:func:`allow_requests` lets one block through inside a blocked test.

Under pytest the plugin (``allm.testing.pytest_plugin``) turns this on per run or per
test: see ``guides/testing.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from . import _hook
from ._hook import Guard, RequestBlocked

__all__ = ["RequestBlocked", "allow_requests", "block_requests", "requests_blocked"]

_WHY = "allm.testing.block_requests() is active; use a Fake or a replay, or allow it with allm.testing.allow_requests()."


@contextlib.contextmanager
def block_requests(*, allow_hosts: Iterable[str] = (), allow_loopback: bool = True, why: str = _WHY) -> Iterator[None]:
    """Block real HTTP requests inside the block (process-wide: every thread and event loop).

    ``allow_hosts`` are host names (or IP addresses) let through; servers on this machine
    are too unless ``allow_loopback=False``. ``why`` ends the error message (say what
    turned the guard on and how to allow a request). Usable as a decorator too. Raises
    :class:`RequestBlocked` from the call that would have sent, before anything is sent.
    """
    guard = Guard(True, _hook.hosts(allow_hosts), why, allow_loopback)
    _hook.push(guard)
    try:
        yield
    finally:
        _hook.pop(guard)


@contextlib.contextmanager
def allow_requests() -> Iterator[None]:
    """Let real requests through inside the block, even within :func:`block_requests`."""
    guard = Guard(False)
    _hook.push(guard)
    try:
        yield
    finally:
        _hook.pop(guard)


def requests_blocked() -> bool:
    """Whether a real request to a non-loopback host would be blocked right now."""
    guard = _hook.current_guard()
    return guard is not None and guard.blocked
