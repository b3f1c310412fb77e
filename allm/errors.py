"""The error hierarchy.

Every error is an :class:`AllmError` with a ``reason`` from a closed set, the
provider's own message, and (for provider failures) the HTTP ``status``,
``retry_after`` in seconds when the provider sent one, and the provider's request
id. Errors are values too: they pickle, compare by content and round-trip through
:mod:`allm.codec`. No error ever carries an API key: provider messages are passed
through :func:`redact` before they are stored.

===================  ==========================================================
class                reasons
===================  ==========================================================
AdapterError         rate_limited, authentication_failed, permission_denied,
                     not_found, invalid_request, context_length_exceeded,
                     content_filter, provider_unavailable, timeout,
                     network_error, malformed_response, unsupported_feature,
                     no_scripted_response, unknown
EngineError          missing_adapter, missing_model, missing_key, invalid_key,
                     unknown_tool, invalid_engine,
                     unsupported_response_format, unsupported_operation,
                     unknown_middleware, middleware_failed
ValidationError      invalid_request, invalid_message, invalid_tool,
                     invalid_image, invalid_thread, invalid_session,
                     invalid_output (raised as its subclass
                     InvalidOutputError, with raw_text and errors)
ToolError            handler_raised, timeout, invalid_return, not_found,
                     invalid_arguments, encoding_failed, refused
SessionError         session_in_error_state, invalid_status,
                     unknown_tool_call_id, not_found
StoreError           version_conflict, unavailable, invalid_url,
                     closed, corrupt
MCPError             invalid_server, server_unavailable,
                     authentication_failed, connection_lost, timeout,
                     unknown_server, unknown_tool, tool_not_allowed,
                     protocol_error, closed
===================  ==========================================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "AdapterError",
    "AllmError",
    "EngineError",
    "InvalidOutputError",
    "MCPError",
    "SessionError",
    "StoreError",
    "ToolError",
    "ValidationError",
    "redact",
    "scrub",
]

# Provider key shapes: OpenAI/OpenRouter/Anthropic ("sk-...", also masked as "sk-proj-****abcd"),
# Google ("AIza...", "ya29."), bearer tokens, key headers and URL query parameters echoed back
# in messages (httpx exception strings may carry a URL).
_KEY_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-*]{6,}|AIza[0-9A-Za-z_\-]{20,}|ya29\.[0-9A-Za-z_\-.]{10,}|"
    r"(?i:bearer)\s+[A-Za-z0-9_\-.=~+/*]{8,}|"
    r"[^\s*]{2,}\*{4,}[^\s*]*)"  # a masked key of any shape: "abcd1234**********wxyz"
)
_KEY_FIELDS = re.compile(
    r"((?i:(?<![A-Za-z0-9_\-])(?:key|api[_-]?key|access[_-]?token|token|auth)=)|"
    r"(?i:(?:x-(?:goog-)?api-key|api-key|authorization)[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?))"
    r"([^\s&#\"',;]{4,})"
)


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with key-shaped material replaced by ``[redacted]``.

    Replaced: each of ``secrets`` (4 characters or longer) wherever it occurs;
    provider key shapes (``sk-...``, ``AIza...``, ``ya29....``, ``Bearer ...``) and
    masked keys (``abcd1234****wxyz``, as providers echo a wrong key); the
    value of key-carrying URL query parameters (``?key=``, ``api_key=``,
    ``access_token=``...) and headers (``x-api-key:``, ``x-goog-api-key:``,
    ``authorization:``) quoted in a message.
    """
    for s in secrets:
        if s and len(s) >= 4 and s in text:
            text = text.replace(s, "[redacted]")
    text = _KEY_PATTERNS.sub("[redacted]", text)
    return _KEY_FIELDS.sub(lambda m: m.group(1) + "[redacted]", text)


def _redact_value(value: Any, secrets: tuple[str | None, ...]) -> Any:
    if isinstance(value, str):
        return _scrub_text(value, secrets)
    if isinstance(value, Mapping):
        return {k: _redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(v, secrets) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact_value(v, secrets) for v in value)
    return value


_FRAGMENT = 6  # characters: a piece of a key this long is key material


def _fragments(text: str, secret: str) -> str:
    """``text`` with every run of 6+ characters that also occurs in ``secret`` replaced.

    Catches what is left of a key that something else cut apart (a pattern that
    stopped at a comma, a provider that split or truncated it).
    """
    n = _FRAGMENT
    if len(secret) < n or len(text) < n:
        return text
    pieces = {secret[i : i + n] for i in range(len(secret) - n + 1)}
    covered = [False] * len(text)
    hit = False
    for i in range(len(text) - n + 1):
        if text[i : i + n] in pieces:
            hit = True
            for j in range(i, i + n):
                covered[j] = True
    if not hit:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        if covered[i]:
            while i < len(text) and covered[i]:
                i += 1
            out.append("[redacted]")
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def scrub(error: AllmError, *secrets: str | None) -> AllmError:
    """``error`` with ``secrets`` and key shapes removed from its message and metadata (in place).

    Used on every error built from a provider body or an exception string, where the
    key of the call may have been echoed back. Any piece of a secret 6 characters or
    longer is removed too. Returns ``error``.
    """
    cleaned = _scrub_text(error.message, secrets)
    if cleaned != error.message:
        error.message = cleaned
        error.args = (cleaned,)
    if error.metadata:
        error.metadata = _redact_value(dict(error.metadata), secrets)
    for name in ("request_id", "provider"):
        v = getattr(error, name)
        if isinstance(v, str):
            setattr(error, name, _scrub_text(v, secrets))
    return error


def _scrub_text(text: str, secrets: tuple[str | None, ...]) -> str:
    text = redact(text, *secrets)
    for s in secrets:
        if s:
            text = _fragments(text, s)
    return text


class AllmError(Exception):
    """Base of every error allm raises or reports.

    Attributes: ``reason`` (str, from the class's closed set), ``message`` (str),
    ``provider`` (str or None), ``status`` (HTTP status or None), ``retry_after``
    (seconds, float or None), ``request_id`` (the provider's, or None),
    ``metadata`` (JSON-native mapping).
    """

    reasons: ClassVar[frozenset[str]] = frozenset({"unknown"})
    default_reason: ClassVar[str] = "unknown"

    def __init__(
        self,
        message: str = "",
        *,
        reason: str | None = None,
        provider: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        reason = reason or self.default_reason
        if reason not in self.reasons:
            raise ValueError(
                f"{type(self).__name__} has no reason {reason!r}; expected one of {sorted(self.reasons)}"
            )
        self.reason = reason
        self.message = redact(message)
        self.provider = provider
        self.status = status
        self.retry_after = retry_after
        self.request_id = request_id
        self.metadata: Mapping[str, Any] = _redact_value(dict(metadata), ()) if metadata else {}
        super().__init__(self.message)

    def __str__(self) -> str:
        where = f" [{self.provider}" + (f" {self.status}" if self.status else "") + "]" if self.provider else ""
        return f"{self.reason}{where}: {self.message}" if self.message else f"{self.reason}{where}"

    def __repr__(self) -> str:
        parts = [f"reason={self.reason!r}", f"message={self.message!r}"]
        for name in ("provider", "status", "retry_after", "request_id"):
            v = getattr(self, name)
            if v is not None:
                parts.append(f"{name}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-native form; :meth:`from_dict` restores it."""
        return {
            "class": type(self).__name__,
            "reason": self.reason,
            "message": self.message,
            "provider": self.provider,
            "status": self.status,
            "retry_after": self.retry_after,
            "request_id": self.request_id,
            "metadata": dict(self.metadata),
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> AllmError:
        cls = _CLASSES.get(str(data.get("class")), AllmError)
        return cls(
            str(data.get("message", "")),
            reason=data.get("reason"),
            provider=data.get("provider"),
            status=data.get("status"),
            retry_after=data.get("retry_after"),
            request_id=data.get("request_id"),
            metadata=data.get("metadata") or None,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (AllmError.from_dict, (self.to_dict(),))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AllmError):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.reason, self.message, self.status))

    @property
    def retryable(self) -> bool:
        """Whether trying the same call again may succeed (rate limits, overload, timeouts)."""
        return self.reason in _RETRYABLE_REASONS


_RETRYABLE_REASONS = frozenset({"rate_limited", "provider_unavailable", "timeout", "network_error"})


class AdapterError(AllmError):
    """A provider refused or failed a call, or its answer could not be read."""

    reasons = frozenset(
        {
            "rate_limited",
            "authentication_failed",
            "permission_denied",
            "not_found",
            "invalid_request",
            "context_length_exceeded",
            "content_filter",
            "provider_unavailable",
            "timeout",
            "network_error",
            "malformed_response",
            "unsupported_feature",
            "no_scripted_response",
            "unknown",
        }
    )


class EngineError(AllmError):
    """The engine cannot make the call: no key, no model, an unknown tool..."""

    reasons = frozenset(
        {
            "missing_adapter",
            "missing_model",
            "missing_key",
            "invalid_key",
            "unknown_tool",
            "invalid_engine",
            "unsupported_response_format",
            "unsupported_operation",
            "unknown_middleware",
            "middleware_failed",
            "unknown",
        }
    )


class ValidationError(AllmError, ValueError):
    """Input rejected before anything was sent (a bad message, image, tool or session)."""

    reasons = frozenset(
        {
            "invalid_request",
            "invalid_message",
            "invalid_tool",
            "invalid_image",
            "invalid_thread",
            "invalid_session",
            "invalid_output",
            "unknown",
        }
    )
    default_reason = "invalid_request"


class InvalidOutputError(ValidationError):
    """The model's answer is not what was asked for: not JSON, or not valid against the
    schema (reason ``invalid_output``; see :func:`allm.generate_object`).

    - ``raw_text``: the text the model sent (str).
    - ``errors``: why it was refused, one line each (tuple of str; JSON Schema
      errors start with the JSON path of the offending value, ``$.age: ...``).
    - ``response``: the :class:`~allm.types.Response` it came in (not kept by
      pickle or :meth:`to_dict`; ``raw_text`` and ``errors`` are, in ``metadata``).
    """

    default_reason = "invalid_output"

    def __init__(
        self,
        message: str = "",
        *,
        raw_text: str | None = None,
        errors: tuple[str, ...] | list[str] | None = None,
        response: Any = None,
        metadata: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        md = dict(metadata or {})
        if raw_text is not None:
            md["raw_text"] = raw_text
        if errors is not None:
            md["errors"] = list(errors)
        super().__init__(message, metadata=md, **kwargs)
        self.response = response

    @property
    def raw_text(self) -> str:
        return str(self.metadata.get("raw_text", ""))

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(str(e) for e in self.metadata.get("errors", ()))


class ToolError(AllmError):
    """A tool call failed: its handler raised, timed out, or its arguments were invalid."""

    reasons = frozenset(
        {
            "handler_raised",
            "timeout",
            "invalid_return",
            "not_found",
            "invalid_arguments",
            "encoding_failed",
            "refused",
            "unknown",
        }
    )
    default_reason = "handler_raised"


class SessionError(AllmError):
    """An operation that a session's status does not allow, or unknown data for it
    (``not_found``: no session is stored under the id)."""

    reasons = frozenset({"session_in_error_state", "invalid_status", "unknown_tool_call_id", "not_found", "unknown"})


class StoreError(AllmError):
    """A store refused or failed an operation (see :mod:`allm.stores`).

    ``version_conflict``: a conditional write found another version than expected (another
    writer committed first); ``unavailable``: the backing server or file cannot be reached;
    ``invalid_url``: a store URL that names no store; ``closed``: the store was closed;
    ``corrupt``: stored bytes that cannot be read back.
    """

    reasons = frozenset({"version_conflict", "unavailable", "invalid_url", "closed", "corrupt", "unknown"})


class MCPError(AllmError):
    """A Model Context Protocol server could not be used (see :mod:`allm.mcp`).

    ``invalid_server``: a server configuration that cannot work; ``server_unavailable``: the
    server could not be started or reached, or did not finish the MCP handshake;
    ``authentication_failed``: it answered 401 or 403; ``connection_lost``: it went away during
    a call; ``timeout``: a call or the handshake ran past its limit; ``unknown_server``: stored
    data names a server label that the configuration given does not include; ``unknown_tool``:
    the server has no such tool; ``tool_not_allowed``: the server's ``allowed_tools`` leave it
    out; ``protocol_error``: the server answered with a JSON-RPC error or a result that breaks
    the protocol; ``closed``: the client was closed. ``metadata["server_label"]`` names the
    server. Header values never appear in the message or metadata.
    """

    reasons = frozenset(
        {
            "invalid_server",
            "server_unavailable",
            "authentication_failed",
            "connection_lost",
            "timeout",
            "unknown_server",
            "unknown_tool",
            "tool_not_allowed",
            "protocol_error",
            "closed",
            "unknown",
        }
    )


_CLASSES: dict[str, type[AllmError]] = {
    c.__name__: c
    for c in (
        AllmError,
        AdapterError,
        EngineError,
        ValidationError,
        InvalidOutputError,
        ToolError,
        SessionError,
        StoreError,
        MCPError,
    )
}


def from_status(
    status: int,
    message: str,
    *,
    provider: str | None,
    code: str | None = None,
    retry_after: float | None = None,
    request_id: str | None = None,
) -> AdapterError:
    """Classify an HTTP error status (plus a provider error ``code``/``type``) into a reason."""
    c = (code or "").lower()
    m = message.lower()
    if (
        "context_length" in c
        or "context_window" in c
        or "exceed_context" in c
        or "prompt is too long" in m
        or "context length" in m
        or "context window" in m
        or "exceeds the available context" in m
        or "maximum context" in m
    ):
        reason = "context_length_exceeded"
    elif status == 401 or "invalid_api_key" in c or "authentication_error" in c:
        reason = "authentication_failed"
    elif status == 403 or "permission_error" in c:
        reason = "permission_denied"
    elif status == 404 or "not_found_error" in c:
        reason = "not_found"
    elif status == 429 or "rate_limit" in c:
        reason = "rate_limited"
    elif status == 408:
        reason = "timeout"
    elif status == 529 or "overloaded" in c or status >= 500 or status == 409:
        reason = "provider_unavailable"
    elif 400 <= status < 500:
        reason = "invalid_request"
    else:
        reason = "unknown"
    return AdapterError(
        message, reason=reason, provider=provider, status=status, retry_after=retry_after, request_id=request_id
    )


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = lower.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    import datetime as _dt

    now = _dt.datetime.now(when.tzinfo or _dt.UTC)
    return max(0.0, (when - now).total_seconds())
