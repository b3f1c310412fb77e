"""Subscriptions: a consumer's view of one conversation's updates.

The manager puts updates into each subscription's own queue (never waiting for a
consumer); a consumer reads at its own pace. A subscription that falls ``capacity``
updates behind is detached: its consumer reads what was queued, then
:class:`~allm.errors.ConversationError` (``lagged``) with ``metadata["next_index"]``,
the first history index it has not seen as a ``MessageAdded``, to subscribe again
from. Closing a subscription (or dropping it) detaches it; the conversation goes on.
When the conversation or its manager closes, iteration ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from ..errors import ConversationError
from .events import MessageAdded, Update

__all__ = ["AsyncSubscription", "Sink", "Subscription"]

DEFAULT_CAPACITY = 10_000


class _End:
    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class _Queue(Protocol):
    def qsize(self) -> int: ...

    def put_nowait(self, item: object, /) -> None: ...


Q = TypeVar("Q", bound=_Queue)


class Sink(Generic[Q]):
    """The manager's side of a subscription: a queue (``queue.SimpleQueue`` for a thread,
    ``asyncio.Queue`` for a task) it fills on its event loop. The consumer's side
    (:class:`Subscription`, :class:`AsyncSubscription`) holds the sink; the manager holds
    only the sink, so a consumer that is dropped detaches."""

    __slots__ = ("_detach", "capacity", "conversation_id", "detached", "next_index", "q")

    def __init__(self, conversation_id: str, capacity: int, q: Q) -> None:
        self.conversation_id = conversation_id
        self.capacity = capacity
        self.q = q
        self.next_index = 0
        self.detached = False
        self._detach: Callable[[], None] | None = None

    def put(self, item: Update) -> bool:
        """Queue ``item``; ``False`` (and nothing queued) when the consumer is ``capacity`` behind."""
        if self.q.qsize() >= self.capacity:
            return False
        if type(item) is MessageAdded:
            self.next_index = item.index + 1
        self.q.put_nowait(item)
        return True

    def end(self, error: BaseException | None = None) -> None:
        """No more updates: iteration ends (raising ``error`` if given)."""
        self.detached = True
        self.q.put_nowait(_End(error))

    def lagged(self) -> None:
        self.end(
            ConversationError(
                f"the subscription to conversation {self.conversation_id!r} fell {self.capacity} updates behind "
                f"and was detached; subscribe again with since={self.next_index}",
                reason="lagged",
                metadata={"conversation_id": self.conversation_id, "next_index": self.next_index},
            )
        )

    def close(self) -> None:
        if self.detached:
            return
        self.detached = True
        if self._detach is not None:
            with contextlib.suppress(RuntimeError):  # the manager's loop is gone
                self._detach()


def _timeout_error(conversation_id: str, timeout: float | None) -> ConversationError:
    return ConversationError(
        f"no update from conversation {conversation_id!r} within {timeout} s",
        reason="timeout",
        metadata={"conversation_id": conversation_id, "timeout": timeout},
    )


def _unwrap(sub: Subscription | AsyncSubscription, item: object, stop: type[Exception]) -> Update:
    """``item`` as an update; at the end, mark ``sub`` done and raise the end's error or ``stop``."""
    if isinstance(item, _End):
        sub._done = True
        raise item.error if item.error is not None else stop()
    return item  # type: ignore[return-value]


class Subscription:
    """A blocking iterator of one conversation's updates (see the module docstring).

    ``for update in sub`` blocks for each; ``sub.get(timeout=s)`` waits at most ``s``
    seconds (raising :class:`~allm.errors.ConversationError` ``timeout``); ``sub.close()``
    (or ``with``, or dropping it) detaches it.
    """

    __slots__ = ("_done", "_sink")

    def __init__(self, sink: Sink[queue.SimpleQueue[object]]) -> None:
        self._sink = sink
        self._done = False

    @property
    def conversation_id(self) -> str:
        return self._sink.conversation_id

    def __iter__(self) -> Iterator[Update]:
        return self

    def __next__(self) -> Update:
        return self._take(None)

    def get(self, timeout: float | None = None) -> Update:
        """The next update, waiting at most ``timeout`` seconds. Raises ``StopIteration``
        at the end, :class:`~allm.errors.ConversationError` (``timeout``, ``lagged``)."""
        return self._take(timeout)

    def _take(self, timeout: float | None) -> Update:
        if self._done:
            raise StopIteration
        try:
            item = self._sink.q.get(timeout=timeout)
        except queue.Empty:
            raise _timeout_error(self.conversation_id, timeout) from None
        return _unwrap(self, item, StopIteration)

    def close(self) -> None:
        """Detach: the conversation stops queueing for this consumer; iteration ends."""
        self._sink.close()
        self._done = True

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        self._sink.close()


class AsyncSubscription:
    """The async twin of :class:`Subscription`: ``async for``, ``await get(timeout=)``,
    ``await aclose()`` or ``async with``."""

    __slots__ = ("_done", "_sink")

    def __init__(self, sink: Sink[asyncio.Queue[object]]) -> None:
        self._sink = sink
        self._done = False

    @property
    def conversation_id(self) -> str:
        return self._sink.conversation_id

    def __aiter__(self) -> AsyncIterator[Update]:
        return self

    async def __anext__(self) -> Update:
        return await self.get()

    async def get(self, timeout: float | None = None) -> Update:
        """The next update (see :meth:`Subscription.get`); ``StopAsyncIteration`` at the end."""
        if self._done:
            raise StopAsyncIteration
        try:
            item = await asyncio.wait_for(self._sink.q.get(), timeout)
        except TimeoutError:
            raise _timeout_error(self.conversation_id, timeout) from None
        return _unwrap(self, item, StopAsyncIteration)

    async def aclose(self) -> None:
        """Detach (see :meth:`Subscription.close`)."""
        self._sink.close()
        self._done = True

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __del__(self) -> None:
        self._sink.close()
