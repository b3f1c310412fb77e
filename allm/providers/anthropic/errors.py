"""Anthropic's errors as typed :class:`~allm.errors.AdapterError` s.

Follows https://docs.anthropic.com/en/api/errors: an HTTP error body is ``{"type":
"error", "error": {"type", "message"}, "request_id"}``; a stream's ``error`` event
carries the same ``error`` object. The reason comes from the error ``type``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import AdapterError, from_status, parse_retry_after
from .._wire import error_body, header

__all__ = ["PROVIDER", "error_from_body", "stream_error"]

PROVIDER = "anthropic"

# Error ``type`` (https://docs.anthropic.com/en/api/errors) -> AdapterError reason.
_ERROR_REASONS = {
    "invalid_request_error": "invalid_request",
    "authentication_error": "authentication_failed",
    "permission_error": "permission_denied",
    "billing_error": "permission_denied",
    "not_found_error": "not_found",
    "request_too_large": "invalid_request",
    "rate_limit_error": "rate_limited",
    "api_error": "provider_unavailable",
    "overloaded_error": "provider_unavailable",
    "timeout_error": "timeout",
}


def _context_exceeded(message: str) -> bool:
    m = message.lower()
    return "prompt is too long" in m or "exceed context limit" in m or "context window" in m


def _reason(base: str, error_type: str | None, message: str) -> str:
    if base == "context_length_exceeded" or _context_exceeded(message):
        return "context_length_exceeded"
    return _ERROR_REASONS.get(error_type or "", base)


def stream_error(err: Any, provider: str = PROVIDER) -> AdapterError:
    """An ``error`` event (or a 200 body of ``type: error``) as a typed error.

    ``overloaded_error`` and ``api_error`` -> ``provider_unavailable``,
    ``rate_limit_error`` -> ``rate_limited``... (see :func:`error_from_body`).
    """
    if not isinstance(err, Mapping):
        return AdapterError(str(err) if err else "error event without details", reason="unknown", provider=provider)
    message = str(err.get("message") or "error in stream")
    t = err.get("type")
    etype = t if isinstance(t, str) else None
    return AdapterError(
        message,
        reason=_reason("unknown", etype, message),
        provider=provider,
        metadata={"error_type": etype} if etype else None,
    )


def error_from_body(
    status: int, headers: Mapping[str, str], body: bytes, provider: str = PROVIDER
) -> AdapterError:
    """An HTTP error response as a typed :class:`AdapterError`.

    Reads Anthropic's ``{"type": "error", "error": {"type", "message"},
    "request_id"}`` and the OpenAI shape some compatible servers use. The reason
    comes from the error ``type`` (``authentication_error`` ->
    ``authentication_failed``, ``rate_limit_error`` -> ``rate_limited``,
    ``overloaded_error`` (529) / ``api_error`` -> ``provider_unavailable``,
    ``timeout_error`` -> ``timeout``...) or else the status; a prompt over the
    context window (``prompt is too long``) is ``context_length_exceeded``.
    ``retry_after`` (seconds) from ``retry-after-ms`` / ``retry-after``;
    ``request_id`` from the ``request-id`` header, else the body's ``request_id``.
    """
    data, err, message = error_body(body)
    t = err.get("type")
    etype = t if isinstance(t, str) else None
    request_id = header(headers, "request-id", "x-request-id")
    if not request_id and isinstance(data, dict) and isinstance(data.get("request_id"), str):
        request_id = data["request_id"]
    base = from_status(status, message or f"HTTP {status}", provider=provider, code=etype)
    return AdapterError(
        base.message,
        reason=_reason(base.reason, etype, message),
        provider=provider,
        status=status,
        retry_after=parse_retry_after(headers),
        request_id=request_id,
        metadata={"error_type": etype} if etype else None,
    )
