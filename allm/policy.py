"""Deadlines and retries, as values; the decisions about them, as pure functions.

The shells in :mod:`allm._transport` and :mod:`allm.api` only act on what these
functions decide, so the rules are tested without sockets or clocks.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs

from .errors import AllmError
from .events import Error, MessageStarted, RawChunk

__all__ = ["Attempts", "RetryInfo", "RetryPolicy", "Timeouts", "retry_delay"]

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@attrs.frozen
class Timeouts:
    """Deadlines of one call, in seconds (``None``: no limit).

    - ``connect``: to open the connection.
    - ``first_event``: from sending the request to the first event.
    - ``idle``: longest gap between two events once the stream has begun.
    - ``total``: the whole call, retries included.

    A stream that goes silent ends with an ``AdapterError(reason="timeout")``: raised
    if nothing reached the caller yet, otherwise reported as an ``Error`` event.
    """

    connect: float | None = 10.0
    first_event: float | None = 600.0
    idle: float | None = 120.0
    total: float | None = None


@attrs.frozen
class RetryPolicy:
    """How failed calls are tried again, before any event has reached the caller.

    ``max_attempts`` counts the first try (1 disables retries). The delay before
    attempt *n+1* is ``min(max_delay, base_delay * 2**(n-1))`` plus a random
    ``jitter`` fraction of it, unless the provider said how long to wait
    (``Retry-After`` / ``retry-after-ms``), which wins when
    ``respect_retry_after`` and is capped at ``retry_after_cap`` seconds.
    Retried: HTTP ``statuses`` and errors whose reason is rate_limited,
    provider_unavailable, timeout or network_error. Never retried: other 4xx,
    and anything once the first event has reached the caller.
    """

    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.25
    respect_retry_after: bool = True
    retry_after_cap: float = 60.0
    statuses: frozenset[int] = RETRY_STATUSES

    def __attrs_post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts counts the first try: it must be at least 1")


NO_RETRY = RetryPolicy(max_attempts=1)


def should_retry(policy: RetryPolicy, error: AllmError) -> bool:
    if error.status is not None and error.status in policy.statuses:
        return True
    if error.status is not None and 400 <= error.status < 500:
        return False
    return error.retryable


def retry_delay(
    policy: RetryPolicy,
    attempt: int,
    error: AllmError,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before trying again after failed ``attempt`` (1-based), or ``None``.

    ``None`` means do not retry: attempts are used up or the error is not retryable.
    """
    if attempt >= policy.max_attempts or not should_retry(policy, error):
        return None
    if policy.respect_retry_after and error.retry_after is not None and error.retry_after > 0:
        wait: float = min(float(error.retry_after), policy.retry_after_cap)
        return wait * (1.0 + policy.jitter * rand() * 0.1)
    base = min(policy.max_delay, policy.base_delay * (2.0 ** (attempt - 1)))
    return base * (1.0 + policy.jitter * rand())


@attrs.frozen
class RetryInfo:
    """What an ``on_retry`` hook receives before the engine sleeps and tries again."""

    attempt: int
    delay: float
    error: AllmError


class Attempts:
    """The pure state of one call across retries, shared by the sync and async shells.

    Events produced before the first *content* event (``MessageStarted``, usage
    chunks) are held back, so a failure that arrives right after the provider
    accepted the call (Anthropic's in-stream ``overloaded_error``) can still be
    retried: nothing has reached the caller yet. ``deadline()`` gives the instant
    the current wait must end, from :class:`Timeouts`.
    """

    __slots__ = ("_held", "_rand", "attempt", "policy", "start", "started", "timeouts", "wait_start")

    def __init__(
        self, policy: RetryPolicy, timeouts: Timeouts, now: float, rand: Callable[[], float] = random.random
    ) -> None:
        self.policy = policy
        self.timeouts = timeouts
        self.start = now
        self.wait_start = now
        self.attempt = 0
        self.started = False
        self._held: list[Any] = []
        self._rand = rand

    def begin(self, now: float) -> None:
        self.attempt += 1
        self.wait_start = now
        self._held = []

    def deadline(self) -> float | None:
        """When the current wait times out (``None``: never)."""
        t = self.timeouts
        d: float | None = None
        if t.total is not None:
            d = self.start + t.total
        if not self.started:
            if t.first_event is not None:
                fe = self.wait_start + t.first_event
                d = fe if d is None or fe < d else d
        elif t.idle is not None:
            ie = self.wait_start + t.idle
            d = ie if d is None or ie < d else d
        return d

    def timeout_error(self, provider: str | None, now: float) -> AllmError:
        from .errors import AdapterError

        t = self.timeouts
        if t.total is not None and now >= self.start + t.total - 1e-3:
            what = f"the call took longer than its total deadline of {t.total:g} s"
        elif not self.started:
            what = f"no event within the first-event deadline of {t.first_event:g} s"
        else:
            what = f"no event within the idle deadline of {t.idle:g} s"
        return AdapterError(what, reason="timeout", provider=provider)

    def take(self, events: list[Any]) -> tuple[list[Any], AllmError | None]:
        """``(events to yield now, error ending this attempt before anything reached the caller)``."""
        if self.started:
            return events, None
        for ev in events:
            t = type(ev)
            if t is Error:
                return [], ev.error
            if t is not MessageStarted and t is not RawChunk:
                self.started = True
                out = self._held + events if self._held else events
                self._held = []
                return out, None
        self._held.extend(events)
        return [], None

    def flush(self) -> list[Any]:
        """Held events at the end of a stream that had no content event."""
        out, self._held = self._held, []
        if out:
            self.started = True
        return out

    def next_delay(self, error: AllmError, now: float) -> float | None:
        """Seconds to wait before another attempt, or ``None`` to give up."""
        delay = retry_delay(self.policy, self.attempt, error, self._rand)
        if delay is None:
            return None
        t = self.timeouts
        if t.total is not None and now + delay >= self.start + t.total:
            return None
        return delay
