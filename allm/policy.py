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

__all__ = ["NEVER_RETRIED", "NO_RETRY", "Attempts", "RetryInfo", "RetryPolicy", "Timeouts", "retry_delay", "should_retry"]

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def _positive_or_none(_inst: Any, attribute: Any, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"Timeouts.{attribute.name} must be a positive number of seconds or None, not {value!r}")


def _non_negative(_inst: Any, attribute: Any, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"RetryPolicy.{attribute.name} must be >= 0, not {value!r}")


@attrs.frozen
class Timeouts:
    """Deadlines of one call, in seconds (``None``: no limit).

    - ``connect``: to open the connection (and to send the request, and to wait
      for a free pooled connection).
    - ``first_event``: from sending the request to the first event, per attempt.
      For a non-streaming body (and model lists, embeddings) it bounds reading the
      whole body.
    - ``idle``: longest gap between two events once the stream has begun. Bytes
      that do not complete an event do not reset it (a drip-feed cannot extend it).
    - ``total``: the whole call, retries and their waits included. A retry whose
      wait would end after it is not made.

    A call that misses a deadline ends with an ``AdapterError(reason="timeout")``
    whose message names the deadline: raised if nothing reached the caller yet,
    otherwise reported as an ``Error`` event.
    """

    connect: float | None = attrs.field(default=10.0, validator=_positive_or_none)
    first_event: float | None = attrs.field(default=600.0, validator=_positive_or_none)
    idle: float | None = attrs.field(default=120.0, validator=_positive_or_none)
    total: float | None = attrs.field(default=None, validator=_positive_or_none)


# Reasons that say trying the same call again cannot succeed, whatever the HTTP status
# (OpenAI answers "request too large for the per-minute limit" with 429). The generic
# 4xx reasons (invalid_request, not_found) do not veto a retryable status: providers
# label a 408 or 409 "invalid_request_error" too.
NEVER_RETRIED = frozenset(
    {
        "authentication_failed",
        "permission_denied",
        "context_length_exceeded",
        "content_filter",
        "unsupported_feature",
    }
)


@attrs.frozen
class RetryPolicy:
    """How failed calls are tried again, before any event has reached the caller.

    ``max_attempts`` counts the first try (1 disables retries). The wait before
    attempt *n+1* is ``b = min(max_delay, base_delay * 2**(n-1))`` seconds, minus a
    random fraction of up to ``jitter`` of it (so ``b * (1 - jitter) <= wait <= b``,
    never above the cap), unless the provider said how long to wait
    (``retry-after-ms`` / ``Retry-After``), which wins when ``respect_retry_after``,
    capped at ``retry_after_cap`` seconds (plus at most 2.5 % jitter, never less
    than asked).

    Retried: an HTTP status in ``statuses`` (408, 409, 429, 500, 502, 503, 504,
    529) and, without a status, errors whose reason is ``rate_limited``,
    ``provider_unavailable``, ``timeout`` or ``network_error`` (connection refused
    or reset, closed before the response, connect and first-event timeouts, a
    provider error event before any content). Never retried: other 4xx; without a
    status, ``invalid_request``, ``malformed_response`` and the like; whatever the
    status, reasons that say the call cannot succeed (:data:`NEVER_RETRIED`:
    ``authentication_failed``, ``permission_denied``, ``context_length_exceeded``,
    ``content_filter``, ``unsupported_feature``); and anything once the first event
    has reached the caller.
    """

    max_attempts: int = 3
    base_delay: float = attrs.field(default=0.5, validator=_non_negative)
    max_delay: float = attrs.field(default=8.0, validator=_non_negative)
    jitter: float = 0.25
    respect_retry_after: bool = True
    retry_after_cap: float = attrs.field(default=60.0, validator=_non_negative)
    statuses: frozenset[int] = attrs.field(default=RETRY_STATUSES, converter=frozenset)

    def __attrs_post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts counts the first try: it must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter is a fraction between 0 and 1, not {self.jitter!r}")


NO_RETRY = RetryPolicy(max_attempts=1)


def as_retry_policy(value: RetryPolicy | bool | None) -> RetryPolicy | None:
    """``False`` -> :data:`NO_RETRY` (no retries, as ALLM spells it); ``True`` or ``None`` -> ``None``
    (the default or the engine's); a :class:`RetryPolicy` as it is. Raises ``TypeError`` otherwise."""
    if value is False:
        return NO_RETRY
    if value is None or value is True:
        return None
    if isinstance(value, RetryPolicy):
        return value
    raise TypeError(f"retry must be an allm.RetryPolicy, False (no retries) or None, not {type(value).__name__}")


def _engine_retry(value: RetryPolicy | bool | None) -> RetryPolicy:
    return as_retry_policy(value) or RetryPolicy()


def should_retry(policy: RetryPolicy, error: AllmError) -> bool:
    """Whether ``error`` (ending an attempt before any event reached the caller) is worth another try."""
    if error.reason in NEVER_RETRIED:
        return False
    if error.status is not None:
        return error.status in policy.statuses
    return error.retryable


def retry_delay(
    policy: RetryPolicy,
    attempt: int,
    error: AllmError,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before trying again after failed ``attempt`` (1-based), or ``None``.

    ``None`` means do not retry: attempts are used up or the error is not retryable.
    ``rand`` returns a float in [0, 1) (injected by tests).
    """
    if attempt >= policy.max_attempts or not should_retry(policy, error):
        return None
    if policy.respect_retry_after and error.retry_after is not None and error.retry_after > 0:
        wait: float = min(float(error.retry_after), policy.retry_after_cap)
        return wait * (1.0 + policy.jitter * rand() * 0.1)
    base = min(policy.max_delay, policy.base_delay * (2.0 ** (attempt - 1)))
    return base * (1.0 - policy.jitter * rand())


@attrs.frozen
class RetryInfo:
    """What an ``on_retry`` hook receives before the engine sleeps and tries again.

    ``attempt``: the attempt that failed (1-based); ``delay``: the seconds about to
    be slept; ``error``: why it failed (its ``reason`` is also :attr:`reason`).
    """

    attempt: int
    delay: float
    error: AllmError

    @property
    def reason(self) -> str:
        return self.error.reason


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

    def deadline_passed(self, now: float) -> bool:
        """Whether the current deadline (see :meth:`deadline`) has been reached at ``now``."""
        d = self.deadline()
        return d is not None and now >= d - 1e-3

    def timeout_error(self, provider: str | None, now: float) -> AllmError:
        """The ``timeout`` error for the deadline that bounds the current wait, named in its message."""
        from .errors import AdapterError

        t = self.timeouts
        if self.started:
            phase_end = self.wait_start + t.idle if t.idle is not None else None
            what = f"no event within the idle deadline of {t.idle:g} s" if t.idle is not None else ""
        else:
            phase_end = self.wait_start + t.first_event if t.first_event is not None else None
            what = f"no event within the first-event deadline of {t.first_event:g} s" if t.first_event is not None else ""
        if t.total is not None and (phase_end is None or self.start + t.total <= phase_end):
            what = f"the call took longer than its total deadline of {t.total:g} s"
        return AdapterError(what or "read timeout", reason="timeout", provider=provider, metadata={"elapsed": round(now - self.start, 3)})

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
