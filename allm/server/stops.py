"""What a route's middleware stop means to an Open Responses client.

A route's ``middleware`` (``[[routes]] middleware = [{use = "rate_limit", ...}]``, built by
:func:`allm.middleware.from_spec`) runs in each response's tool loop. When one stops the
run, the server answers so:

====================================  ==========================================================
stop                                  answer
====================================  ==========================================================
a rate limit before the first call    HTTP 429, ``{"error": {"type": "too_many_requests",
                                      "code": "rate_limit_exceeded", ...}}`` and ``retry-after``
                                      (seconds, rounded up); streamed or not, before any event
a rate limit later in a tool loop     ``response.failed``, ``error.code`` ``rate_limit_exceeded``
a content filter                      ``incomplete``, ``incomplete_details.reason``
                                      ``content_filter``; an output match removes the blocked
                                      message from the response's output (its streamed deltas
                                      were sent already)
a token budget, or another stop       ``incomplete``, ``incomplete_details.reason`` the stop's
                                      name (``token_budget``)
====================================  ==========================================================

Every stop is also reported in the response's ``metadata["allm_warnings"]``: the
middleware's name and message and, for a filter, the pattern (never the matched text).

:func:`call_context` is the route's ``context`` for each call, which the built-ins count
by (``key = "client"``): ``client`` (an id of the caller's bearer token: 16 hex digits of its
SHA-256, or ``anonymous``), ``user`` (``safety_identifier`` or ``user`` of the request, or
``anonymous``), ``model`` (the requested name) and ``route`` (its provider or adapter name).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

from ..errors import AdapterError, AllmError
from ..events import ChatCompleted, Event

__all__ = ["call_context", "first_event_error", "outcome"]


def _stopped_by(result: Any) -> Mapping[str, Any] | None:
    meta = getattr(result, "metadata", None)
    found = meta.get("stopped_by") if isinstance(meta, Mapping) else None
    return found if isinstance(found, Mapping) else None


def _is_rate_limit(stopped: Mapping[str, Any]) -> bool:
    return "retry_after" in stopped and "limit" in stopped


def first_event_error(event: Event) -> AllmError | None:
    """The error to answer instead of a response when a run's first event is the end of a
    chat a rate limit stopped before any model call (an :class:`~allm.errors.AdapterError`
    ``rate_limited`` with ``retry_after``, which the server answers with HTTP 429); else ``None``."""
    if type(event) is not ChatCompleted:
        return None
    assert isinstance(event, ChatCompleted)
    stopped = _stopped_by(event.result)
    if stopped is None or not _is_rate_limit(stopped) or event.result.steps:
        return None
    retry = stopped.get("retry_after")
    retry_after = float(math.ceil(retry)) if isinstance(retry, (int, float)) and retry > 0 else None
    message = str(stopped.get("message") or "rate limit exceeded")
    return AdapterError(f"{message} (retry after {retry_after or 0:g} s)", reason="rate_limited", retry_after=retry_after,
                        metadata={"middleware": str(stopped.get("middleware") or event.result.halted_reason)})


def outcome(mapper: Any) -> tuple[str | None, str | None]:
    """``(status, reason)`` for :meth:`~allm.server.translate.EventMapper.finish` when the
    chat ``mapper`` gathered was stopped by a middleware (see the module's table), after
    noting the stop in ``mapper.warnings`` (and, for a rate limit, ``mapper.error``);
    ``(None, None)`` otherwise (the mapper decides)."""
    result = getattr(mapper, "result", None)
    stopped = _stopped_by(result)
    if result is None or stopped is None or mapper.error is not None:
        return None, None
    name = str(result.halted_reason)
    note = f"stopped by {stopped.get('middleware', name)}: {stopped.get('message', name)}"
    if "pattern" in stopped:
        note += f" (pattern {stopped['pattern']!r})"
    mapper.warnings.append(note)
    if _is_rate_limit(stopped):
        mapper.error = {"code": "rate_limit_exceeded", "message": str(stopped.get("message") or "rate limit exceeded")}
        return "failed", None
    if stopped.get("direction") == "output":
        _drop_last_message(mapper)
    return "incomplete", name


def _drop_last_message(mapper: Any) -> None:
    """Remove the assistant message items of the last turn (after the last tool output)."""
    out: list[dict[str, Any]] = mapper.output
    last_tool = max((i for i, it in enumerate(out) if it.get("type") != "message"), default=-1)
    mapper.output[:] = [it for i, it in enumerate(out) if i <= last_tool or it.get("type") != "message"]


def call_context(route: Any, params: Any, headers: Mapping[str, str]) -> dict[str, Any]:
    """``{"context": {...}}``: the chat options a route's middleware counts by (see the module
    docstring). The bearer token itself is never in it, only a hash."""
    auth = headers.get("authorization", "")
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    client = hashlib.sha256(token.encode()).hexdigest()[:16] if token else "anonymous"
    user = getattr(params, "safety_identifier", None) or getattr(params, "user", None) or "anonymous"
    return {"context": {"client": client, "user": user, "model": params.model, "route": route.name}}
