"""The call machine: every decision of one call, as a pure state machine (in the style of h11).

The shells in :mod:`allm._transport` (one sync, one async) only perform I/O. They tell the
machine what happened — the answer's status and headers, a chunk of the body (or, for a
local adapter such as the Fake, one item it played), the end of the body, a failure, the
time — and read back what to do next from :attr:`CallMachine.act`:

==========  =============================================================================
``READ``    keep reading (emit the returned events first, if any)
``DRAIN``   the stream is over: read what is left of the body without feeding it (so the
            connection can be reused), then call :meth:`CallMachine.eof`
``SLEEP``   sleep :attr:`CallMachine.sleep_for` seconds (a local adapter's pause), then
            call :meth:`CallMachine.woke`
``DONE``    emit the returned events; the call is over
``RETRY``   this attempt failed: close it, call ``plan.on_retry`` with
            :attr:`CallMachine.retry_info`, sleep :attr:`CallMachine.sleep_for` seconds and
            begin another attempt
``RAISE``   raise :attr:`CallMachine.error` (nothing reached the caller)
==========  =============================================================================

Every method takes ``now`` (monotonic seconds) where a decision depends on the time; the
machine never reads a clock, sleeps or touches a socket, so retries, deadlines, held
events and key scrubbing are tested without either.

Rules it holds (see :class:`~allm.policy.RetryPolicy` and :class:`~allm.policy.Timeouts`):
events before the first content event are held back, so a failure right after the
provider accepted the call can still be retried; once an event reached the caller a
failure is an ``Error`` event that ends the stream; a stream that ends without its
provider's terminal marker is an error; a stream may not send more than
:data:`MAX_EVENT_BYTES` without completing an event, nor a body more than
:data:`MAX_BODY_BYTES`; every error is scrubbed of the call's key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .errors import AdapterError, AllmError, scrub
from .events import Error, Event, RawChunk, TextDelta, ToolCallDelta
from .plan import Plan
from .policy import Attempts, RetryInfo
from .providers.base import Decoder, Delay

__all__ = [
    "DONE",
    "DRAIN",
    "MAX_BODY_BYTES",
    "MAX_ERROR_BODY_BYTES",
    "MAX_EVENT_BYTES",
    "RAISE",
    "READ",
    "RETRY",
    "SLEEP",
    "CallMachine",
]

READ, DRAIN, SLEEP, DONE, RETRY, RAISE = range(6)

#: Bytes a stream may send without completing an event (a ``malformed_response`` past it).
MAX_EVENT_BYTES = 16 * 2**20
#: Bytes of a non-streaming body (a ``malformed_response`` past it).
MAX_BODY_BYTES = 256 * 2**20
#: Bytes of an error body that are read (the rest is dropped with the connection).
MAX_ERROR_BODY_BYTES = 2**20


class CallMachine:
    """The state of one call across its attempts. See the module docstring for the protocol.

    Per attempt: :meth:`begin`, then :meth:`opened`; then either :meth:`body` with the whole
    body (when ``opened`` returned a byte limit) or :meth:`feed` per chunk (``play`` per item
    for a local adapter) and :meth:`eof`; :meth:`failed` or :meth:`too_large` when reading
    broke. After each, act on :attr:`act`. :meth:`resumed` after handing events to the caller.
    """

    __slots__ = (
        "_dec",
        "_filtering",
        "_headers",
        "_pending",
        "_status",
        "_timeout_at",
        "act",
        "attempts",
        "body_limit",
        "error",
        "exact",
        "plan",
        "retry_info",
        "sleep_for",
        "value",
    )

    def __init__(self, plan: Plan, now: float, attempts: Attempts | None = None) -> None:
        self.plan = plan
        self.attempts = attempts if attempts is not None else Attempts(plan.retry, plan.timeouts, now)
        self.act = READ
        self.sleep_for = 0.0
        self.error: AllmError | None = None
        self.retry_info: RetryInfo | None = None
        self.value: tuple[int, Mapping[str, str], bytes] | None = None
        self.body_limit = 0
        self.exact = False
        self._dec: Decoder | None = None
        self._pending = 0
        self._status = 0
        self._headers: Mapping[str, str] = {}
        self._timeout_at: float | None = None
        self._filtering = plan.on_event is not None or not plan.emit_text or not plan.emit_tool or plan.local

    # -- attempts

    def begin(self, now: float) -> float | None:
        """Start an attempt; the instant its first wait times out (``None``: never)."""
        self.attempts.begin(now)
        self.act = READ
        self._dec = None
        self._pending = 0
        self._timeout_at = None
        return self.attempts.deadline()

    def deadline(self) -> float | None:
        """The instant the current wait times out (``None``: never)."""
        return self.attempts.deadline()

    def resumed(self, now: float) -> float | None:
        """The caller handed control back after taking events: the idle gap starts now."""
        self.attempts.wait_start = now
        return self.attempts.deadline()

    # -- what arrived

    def opened(self, status: int, headers: Mapping[str, str]) -> int:
        """The answer's status and headers arrived: ``0`` to read the body chunk by chunk
        (:meth:`feed`), or a byte limit to read the whole body and pass it to :meth:`body`
        (past the limit: :meth:`too_large` when :attr:`exact`, else cut at the limit)."""
        self._status = status
        self._headers = headers
        plan = self.plan
        if plan.call is None:
            limit = 0
        elif status >= 300:
            limit, self.exact = MAX_ERROR_BODY_BYTES, False
        elif plan.once or not plan.call.stream or _is_json(headers):
            # A JSON answer to a streaming request (an error object, or a whole completion,
            # as some proxies send) is read and decoded as the body it is.
            limit, self.exact = MAX_BODY_BYTES, True
        else:
            self._dec = plan.adapter.decoder(plan.call, include_raw=plan.include_raw)
            limit = 0
        self.body_limit = limit
        return limit

    def body(self, body: bytes, now: float) -> list[Event]:
        """The whole body (an error answer, a non-streaming answer or a plain exchange)."""
        plan = self.plan
        if self._status >= 300:
            err = plan.errors.error(self._status, self._headers, _strip(body, plan.secret))
            return self._fail(scrub(err, plan.secret), now)
        if plan.once:
            self.value = (self._status, self._headers, body)
            self.act = DONE
            return []
        assert plan.call is not None
        return self._end(self._clean(plan.adapter.decode_body(plan.call, body, include_raw=plan.include_raw)), now)

    def feed(self, chunk: bytes, now: float) -> list[Event]:
        """A chunk of a streamed body: the events to emit now (often none)."""
        dec = self._dec
        assert dec is not None
        evs = dec.feed(chunk)
        if not evs:
            self._pending += len(chunk)
            if self._pending > MAX_EVENT_BYTES:
                return self._fail(self._too_large("the stream sent data without completing an event: it", MAX_EVENT_BYTES), now)
            return evs
        self._pending = 0
        if dec.failed or self.plan.include_raw:
            evs = self._clean(evs)
        out, err = self.attempts.take(evs)
        if err is not None:
            return self._fail(err, now)
        if dec.finished and not dec.failed:
            self.act = DRAIN
        elif dec.finished:
            self.act = DONE
        return self._filter(out) if self._filtering and out else out

    def play(self, item: Any, now: float) -> list[Event]:
        """One item a local adapter produced: an event, or a :class:`~allm.providers.base.Delay`."""
        if type(item) is Delay:
            seconds = item.seconds
            d = self.attempts.deadline()
            if d is not None and now + seconds >= d:
                self._timeout_at = d
                seconds = max(0.0, d - now)
            self.sleep_for = seconds
            self.act = SLEEP
            return []
        out, err = self.attempts.take([item])
        if err is not None:
            return self._fail(err, now)
        return self._filter(out) if out else out

    def woke(self, now: float) -> list[Event]:
        """The pause asked for by ``SLEEP`` is over."""
        if self._timeout_at is not None:
            return self._fail(self.attempts.timeout_error(self.plan.provider, now), now)
        self.act = READ
        return []

    def eof(self, now: float) -> list[Event]:
        """The body ended (or was drained after the terminal marker)."""
        dec = self._dec
        if dec is None:  # a local adapter's script ran out
            self.act = DONE
            out = self.attempts.flush()
            return self._filter(out) if out else out
        return self._end(self._clean(dec.close()), now)

    def failed(self, error: AllmError, now: float, *, read_timeout: bool = False, timed_out: bool = False) -> list[Event]:
        """Reading failed with ``error`` (already classified). ``read_timeout``: a read waited
        past the current deadline; ``timed_out``: any other timeout (named by its deadline
        when the current deadline has passed)."""
        if read_timeout or (timed_out and self.attempts.deadline_passed(now)):
            error = self.attempts.timeout_error(self.plan.provider, now)
        error = scrub(error, self.plan.secret)
        tail = self._finish_after_failure()
        if tail is not None:
            self.act = DONE
            return tail
        return self._fail(error, now)

    def too_large(self, now: float) -> list[Event]:
        """A whole body read with :attr:`exact` went past its limit."""
        return self._fail(self._too_large("the response body", MAX_BODY_BYTES), now)

    # -- decisions

    def _end(self, events: list[Event], now: float) -> list[Event]:
        out, err = self.attempts.take(events)
        if err is not None:
            return self._fail(err, now)
        out.extend(self.attempts.flush())
        self.act = DONE
        return self._filter(out) if self._filtering and out else out

    def _fail(self, error: AllmError, now: float) -> list[Event]:
        st = self.attempts
        if st.started:
            self.act = DONE
            return [Error(error)]
        delay = st.next_delay(error, now)
        if delay is None:
            self.error = error
            self.act = RAISE
            return []
        self.sleep_for = delay
        self.retry_info = RetryInfo(st.attempt, delay, error)
        self.act = RETRY
        return []

    def _finish_after_failure(self) -> list[Event] | None:
        """The final events if the stream had already given its terminal marker, else ``None``.

        Some decoders (Gemini's: its marker is a chunk's ``finishReason``) finish only at
        ``close()``; a connection lost after the marker has lost nothing.
        """
        dec = self._dec
        if dec is None or dec.finished:
            return None
        tail = dec.close()
        if not tail or dec.failed:
            return None
        out, err = self.attempts.take(self._clean(tail))
        if err is not None:
            return None
        out.extend(self.attempts.flush())
        return self._filter(out) if self._filtering and out else out

    def _too_large(self, what: str, limit: int) -> AdapterError:
        return AdapterError(
            f"{what} exceeded {limit} bytes; the connection was closed",
            reason="malformed_response",
            provider=self.plan.provider,
        )

    def _filter(self, events: list[Event]) -> list[Event]:
        plan = self.plan
        on_event = plan.on_event
        text, tool, raw = plan.emit_text, plan.emit_tool, plan.include_raw
        out = []
        for ev in events:
            if on_event is not None:
                on_event(ev)
            t = type(ev)
            if t is TextDelta:
                if not text:
                    continue
            elif t is ToolCallDelta:
                if not tool:
                    continue
            elif t is RawChunk and not raw and ev.usage is None:  # type: ignore[union-attr]
                continue
            out.append(ev)
        return out

    def _clean(self, events: list[Event]) -> list[Event]:
        """Scrub the key from ``Error`` events and (with raw chunks on) raw chunks that echo it."""
        plan = self.plan
        secret = plan.secret
        for i, ev in enumerate(events):
            t = type(ev)
            if t is Error:
                er: Error = ev  # type: ignore[assignment]
                scrub(er.error, secret)
            elif t is RawChunk and secret and plan.include_raw:
                rc: RawChunk = ev  # type: ignore[assignment]
                found, data = _without(rc.data, secret)
                if found:
                    events[i] = RawChunk(data, rc.usage)
        return events


def _is_json(headers: Mapping[str, str]) -> bool:
    ct = headers.get("content-type", "")
    return ct.startswith("application/json") or ct.startswith("application/problem+json")


def _without(value: Any, secret: str) -> tuple[bool, Any]:
    """``(found, value with secret replaced by [redacted] in every string and key)``."""
    if isinstance(value, str):
        return (True, value.replace(secret, "[redacted]")) if secret in value else (False, value)
    if isinstance(value, dict):
        found = False
        out: dict[Any, Any] = {}
        for k, v in value.items():
            fk, k2 = _without(k, secret)
            fv, v2 = _without(v, secret)
            found = found or fk or fv
            out[k2] = v2
        return (True, out) if found else (False, value)
    if isinstance(value, list):
        pairs = [_without(v, secret) for v in value]
        return (True, [v for _, v in pairs]) if any(f for f, _ in pairs) else (False, value)
    return False, value


def _strip(body: bytes, secret: str | None) -> bytes:
    """An error body without the key (as sent, and JSON-escaped), before the adapter reads it."""
    if not secret or len(secret) < 4:
        return body
    for form in {secret, json_escaped(secret)}:
        b = form.encode("utf-8", "replace")
        if b in body:
            body = body.replace(b, b"[redacted]")
    return body


def json_escaped(text: str) -> str:
    """``text`` as it appears inside a JSON string."""
    return json.dumps(text)[1:-1]
