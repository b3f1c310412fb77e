"""The lazy event streams that every streaming call returns: :class:`EventStream` (sync) and
:class:`AsyncEventStream` (async). Closing one closes the HTTP response under it at once."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Iterator
from types import TracebackType

from .events import Event

__all__ = ["AsyncEventStream", "EventStream"]


class EventStream:
    """A lazy stream of events. Iterate it; leaving a ``for`` loop over it (``break``,
    ``return``, an exception), ``close()`` or leaving a ``with`` block closes the HTTP
    response at once. To pause and resume, pull events with ``next()`` instead.

    ``direct``: ``gen`` is a generator that closes what it reads when it is itself closed
    (an observed call's or chat's: allm's own). The first ``for`` loop then iterates it
    directly, the stream keeping only a weak reference to it, so that leaving the loop early
    still closes it at once, with no wrapping layer per event (the observing layer stands in
    for it)."""

    __slots__ = ("_direct", "_gen")

    def __init__(self, gen: Iterator[Event], *, direct: bool = False) -> None:
        self._gen = gen
        self._direct = direct

    def __iter__(self) -> Iterator[Event]:
        if self._direct:
            self._direct = False
            gen = self._gen
            self._gen = _Taken(gen)
            return gen
        return _closing(self._gen)

    def __next__(self) -> Event:
        return next(self._gen)

    def close(self) -> None:
        close = getattr(self._gen, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class _Taken:
    """What a stream keeps of the generator a ``for`` loop took from it: a weak reference, so
    that the loop dropping it closes it (it then ends here too)."""

    __slots__ = ("_ref",)

    def __init__(self, gen: Iterator[Event]) -> None:
        self._ref = weakref.ref(gen)

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        gen = self._ref()
        if gen is None:
            raise StopIteration
        return next(gen)

    def close(self) -> None:
        gen = self._ref()
        close = getattr(gen, "close", None)
        if close is not None:
            close()


def _closing(gen: Iterator[Event]) -> Iterator[Event]:
    # The iterator a ``for`` loop holds: when the loop is left early it is dropped,
    # and closing it closes ``gen`` (and with it the HTTP response).
    try:
        yield from gen
    finally:
        close = getattr(gen, "close", None)
        if close is not None:
            close()


class AsyncEventStream:
    """The async twin of :class:`EventStream`: ``async for``, ``await aclose()``, ``async with``.

    ``aclose()`` or cancelling the task that iterates it closes the HTTP response at
    once; leaving an ``async for`` loop early closes it when the event loop
    finalises the loop's iterator (its next turn).
    """

    __slots__ = ("_gen",)

    def __init__(self, gen: AsyncIterator[Event]) -> None:
        self._gen = gen

    def __aiter__(self) -> AsyncIterator[Event]:
        return _aclosing(self._gen)

    async def __anext__(self) -> Event:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        aclose = getattr(self._gen, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


async def _aclosing(gen: AsyncIterator[Event]) -> AsyncIterator[Event]:
    try:
        async for ev in gen:
            yield ev
    finally:
        aclose = getattr(gen, "aclose", None)
        if aclose is not None:
            await aclose()
