"""Errors of the Gemini API as typed :class:`~allm.errors.AdapterError` s.

Follows https://ai.google.dev/gemini-api/docs/troubleshooting and Google's RPC error
model (``{"error": {"code", "message", "status", "details": [ErrorInfo, RetryInfo...]}}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import AdapterError, from_status, parse_retry_after
from .._wire import header, json_or_none

__all__ = ["PROVIDER", "error_from_body", "error_from_object"]

PROVIDER = "gemini"

_AUTH_REASONS = frozenset(
    {"API_KEY_INVALID", "API_KEY_EXPIRED", "ACCESS_TOKEN_EXPIRED", "ACCESS_TOKEN_TYPE_UNSUPPORTED", "CREDENTIALS_MISSING"}
)
_STATUS_REASONS = {
    "UNAUTHENTICATED": "authentication_failed",
    "PERMISSION_DENIED": "permission_denied",
    "NOT_FOUND": "not_found",
    "RESOURCE_EXHAUSTED": "rate_limited",
    "DEADLINE_EXCEEDED": "timeout",
    "UNAVAILABLE": "provider_unavailable",
    "INTERNAL": "provider_unavailable",
}
_STATUS_CODES = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def _duration(value: Any) -> float | None:
    """A ``google.protobuf.Duration`` in JSON (``"17s"``, ``"48.9s"``) as seconds."""
    if isinstance(value, str) and value.endswith("s"):
        try:
            return max(0.0, float(value[:-1]))
        except ValueError:
            return None
    return None


def error_from_object(
    provider: str, err: Any, http_status: int | None = None, headers: Mapping[str, str] | None = None
) -> AdapterError:
    """A Google RPC error object (``{"code", "message", "status", "details"}``) as a typed error
    (an HTTP error body's ``error``, or an ``{"error": ...}`` chunk of a stream)."""
    headers = headers or {}
    if not isinstance(err, dict):
        msg = str(err) if err else f"HTTP {http_status}"
        return from_status(http_status or 500, msg, provider=provider, retry_after=parse_retry_after(headers))
    message = str(err.get("message") or "")
    status_name = err.get("status") if isinstance(err.get("status"), str) else None
    code = err.get("code")
    status = http_status or (code if isinstance(code, int) and not isinstance(code, bool) else None)
    if status is None:
        status = _STATUS_CODES.get(status_name or "", 500)
    info_reason: str | None = None
    retry_after: float | None = None
    for d in err.get("details") or ():
        if not isinstance(d, dict):
            continue
        kind = str(d.get("@type") or "")
        if kind.endswith("google.rpc.ErrorInfo") and isinstance(d.get("reason"), str):
            info_reason = d["reason"]
        elif kind.endswith("google.rpc.RetryInfo"):
            retry_after = _duration(d.get("retryDelay"))
    if retry_after is None:
        retry_after = parse_retry_after(headers)
    request_id = header(headers, "x-request-id", "x-goog-request-id")
    e = from_status(
        status,
        message or f"HTTP {status}",
        provider=provider,
        code=" ".join(x for x in (status_name, info_reason) if x) or None,
        retry_after=retry_after,
        request_id=request_id,
    )
    reason = e.reason
    m = message.lower()
    if info_reason in _AUTH_REASONS:
        reason = "authentication_failed"
    elif "input token count" in m and "exceeds the maximum" in m:
        reason = "context_length_exceeded"
    elif status_name in _STATUS_REASONS and reason in ("invalid_request", "unknown", "provider_unavailable"):
        reason = _STATUS_REASONS[status_name]
    metadata = {k: v for k, v in (("google_status", status_name), ("google_reason", info_reason)) if v}
    return AdapterError(
        e.message,
        reason=reason,
        provider=provider,
        status=status,
        retry_after=retry_after,
        request_id=request_id,
        metadata=metadata,
    )


def error_from_body(provider: str, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
    """An HTTP error response of the Gemini API as a typed :class:`~allm.errors.AdapterError`.

    - ``400 INVALID_ARGUMENT`` with ``ErrorInfo.reason`` ``API_KEY_INVALID`` ->
      ``authentication_failed`` (Gemini answers a bad key with 400, not 401);
    - ``403 PERMISSION_DENIED`` -> ``permission_denied``; ``404`` -> ``not_found``;
    - ``429 RESOURCE_EXHAUSTED`` -> ``rate_limited``, ``retry_after`` from
      ``google.rpc.RetryInfo.retryDelay`` (``"17s"``) or else the ``Retry-After``
      header;
    - an input longer than the model's window -> ``context_length_exceeded``;
    - ``500``/``503`` -> ``provider_unavailable``; ``504 DEADLINE_EXCEEDED`` -> ``timeout``.

    The Google ``status`` and ``ErrorInfo.reason`` are kept in ``metadata``
    (``google_status``, ``google_reason``).
    """
    data = json_or_none(body)
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # the JSON-array stream format wraps the error in a list
    if isinstance(data, dict) and "error" in data:
        return error_from_object(provider, data["error"], status, headers)
    text = body[:500].decode("utf-8", "replace").strip()
    return error_from_object(provider, text or f"HTTP {status}", status, headers)
