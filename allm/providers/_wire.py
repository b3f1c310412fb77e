"""What the HTTP adapters share on the wire: SSE decoding, JSON bodies, errors, warnings.

Pure: no I/O. Each adapter module keeps its provider's shapes; the steps they all take
the same way (read a JSON body into events or a value, report a body that is not the
documented shape as ``malformed_response``, name a dropped setting) live here once.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from ..errors import AdapterError, ValidationError
from ..events import Error, Event
from ..types import CallWarning, WarningKind

__all__ = [
    "SHAPE_ERRORS",
    "SSEStreamDecoder",
    "body_events",
    "check_base_url",
    "copy_settings",
    "dropped",
    "error_body",
    "header",
    "int_or_none",
    "join_url",
    "json_body",
    "json_headers",
    "json_or_none",
    "load_json",
    "malformed",
    "model_ids",
    "note",
    "shape_error",
    "token_count",
    "url_path",
    "usage_count",
]

#: What reading a wrongly shaped (but valid JSON) body can raise.
SHAPE_ERRORS = (KeyError, TypeError, AttributeError, IndexError, ValueError)


def malformed(provider: str, why: str) -> AdapterError:
    """An :class:`~allm.errors.AdapterError` with reason ``malformed_response``."""
    return AdapterError(why, reason="malformed_response", provider=provider)


def shape_error(provider: str, what: str, exc: BaseException) -> AdapterError:
    """``unexpected <what> shape (<exception>)`` as ``malformed_response``."""
    return malformed(provider, f"unexpected {what} shape ({type(exc).__name__}: {exc})")


def int_or_none(v: Any) -> int | None:
    """``v`` when it is an ``int`` (not a ``bool``), else ``None``."""
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def usage_count(u: Mapping[str, Any], field: str, dropped: dict[str, Any] | None = None) -> int | None:
    """The token counter ``field`` of a provider's usage object ``u``.

    An ``int`` (not a ``bool``) 0 or more is itself; a string of decimal digits (``"12"``,
    as some proxies send) is its number; a missing or ``null`` counter is ``None``.
    Anything else is ``None`` too, and is recorded in ``dropped`` (``{field: value as
    sent}``), which the decoder reports in ``Response.metadata["dropped_usage"]``.
    """
    v = u.get(field)
    if v is None:
        return None
    if type(v) is int and v >= 0:
        return v
    if isinstance(v, str) and v.strip().isdigit() and v.strip().isascii():
        return int(v.strip())
    if dropped is not None:
        dropped[field] = v
    return None


def json_body(body: Any) -> bytes:
    """``body`` as JSON bytes. Raises :class:`~allm.errors.ValidationError`
    (``invalid_request``) naming the path of the first value JSON cannot hold (a lone
    surrogate in a text, an integer wider than 64 bits, a ``set``...), before anything is sent.
    """
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        where, why = _unencodable(body, "body") or ("body", str(exc))
        raise ValidationError(f"{where} cannot be sent as JSON: {why}", reason="invalid_request") from None


def _unencodable(value: Any, where: str) -> tuple[str, str] | None:
    """``(path, why)`` of the first value below ``value`` that ``orjson`` cannot encode."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return where, f"not valid Unicode text ({exc.reason} at character {exc.start})"
        return None
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return None
    if isinstance(value, int):
        return None if -(2**63) <= value < 2**64 else (where, f"the integer {value} is wider than 64 bits")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                return where, f"the key {k!r} is not a string"
            found = _unencodable(v, f"{where}.{k}")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _unencodable(v, f"{where}[{i}]")
            if found:
                return found
        return None
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return where, f"a {type(value).__name__} is not JSON"
    return None


def check_base_url(owner: str, url: str) -> None:
    """Raise :class:`~allm.errors.ValidationError` (``invalid_request``) unless ``url`` is an
    absolute ``http``/``https`` URL (any other scheme with a host is accepted too) with no
    whitespace or control characters (a CR/LF would split the request line), no fragment
    and no user info (a key belongs in ``api_key=``, not in the URL)."""
    if not isinstance(url, str):
        raise ValidationError(f"{owner}: base_url must be a string, not {type(url).__name__}", reason="invalid_request")
    bad = next((c for c in url if c.isspace() or ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise ValidationError(
            f"{owner}: base_url {url!r} contains {bad!r} (whitespace and control characters are not allowed in a URL)",
            reason="invalid_request",
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parses the port: a bad one raises ValueError)
    except ValueError as exc:
        raise ValidationError(f"{owner}: base_url {url!r} is not a URL ({exc})", reason="invalid_request") from None
    if not parts.scheme or not parts.hostname:
        raise ValidationError(
            f"{owner}: base_url {url!r} is not an absolute URL (expected e.g. https://host/v1)", reason="invalid_request"
        )
    if parts.fragment:
        raise ValidationError(f"{owner}: base_url {url!r} has a fragment ('#...')", reason="invalid_request")
    if parts.username is not None or parts.password is not None:
        raise ValidationError(
            f"{owner}: base_url must not carry user info; pass the key with api_key= or allm.keys",
            reason="invalid_request",
        )


def join_url(base: str, path: str) -> str:
    """``path`` (``"/chat/completions"``, ``"/models?limit=1000"``) appended to the path of
    ``base``, with ``base``'s query string kept after it (``https://x/openai?api-version=1``
    + ``/chat/completions`` -> ``https://x/openai/chat/completions?api-version=1``). A query
    in ``path`` comes first, then ``base``'s."""
    b = urlsplit(base)
    p_path, _, p_query = path.partition("?")
    joined = b.path.rstrip("/") + "/" + p_path.lstrip("/")
    query = "&".join(q for q in (p_query, b.query) if q)
    return urlunsplit((b.scheme, b.netloc, joined, query, ""))


def url_path(url: str) -> str:
    """The path of ``url`` (no query)."""
    return urlsplit(url).path


def json_headers(stream: bool) -> dict[str, str]:
    """``content-type: application/json`` and the ``accept`` of a streamed or whole answer."""
    return {"content-type": "application/json", "accept": "text/event-stream" if stream else "application/json"}


def header(headers: Mapping[str, str], *names: str) -> str | None:
    """The first of ``names`` (lower case) present in ``headers``, matched case-insensitively."""
    lower = {k.lower(): v for k, v in headers.items()}
    for n in names:
        v = lower.get(n)
        if v:
            return v
    return None


def json_or_none(body: bytes) -> Any:
    """``body`` as JSON, or ``None`` when it is empty or not JSON (error bodies may be anything)."""
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def error_body(body: bytes) -> tuple[Any, dict[str, Any], str]:
    """What an HTTP error body says: ``(its JSON or None, its "error" object or {}, the message)``.

    The message is ``error.message``, a string ``error``, a top-level ``message``, or
    else the body's first 500 bytes as text (a proxy's HTML page).
    """
    data = json_or_none(body)
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return data, err, str(err.get("message") or "")
    if isinstance(err, str):
        return data, {}, err
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data, {}, data["message"]
    return data, {}, body[:500].decode("utf-8", "replace")


def load_json(provider: str, body: bytes, what: str) -> Any:
    """``body`` as JSON; raises ``malformed_response`` naming ``what`` when it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise malformed(provider, f"{what} is not valid JSON: {exc}") from None


def model_ids(provider: str, body: bytes, array: str = "data", field: str = "id") -> list[str]:
    """The ``field`` of each object in the ``array`` of a model list body
    (``{"data": [{"id": ...}, ...]}``); raises ``malformed_response`` without that array."""
    data = load_json(provider, body, "the model list")
    items = data.get(array) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise malformed(provider, f"a model list has no {array} array")
    return [m[field] for m in items if isinstance(m, dict) and isinstance(m.get(field), str)]


def token_count(provider: str, body: bytes, field: str = "input_tokens") -> int:
    """The integer ``field`` of a token count body (``{"input_tokens": 14}``); raises
    ``malformed_response`` without one."""
    data = load_json(provider, body, "the token count")
    n = data.get(field) if isinstance(data, dict) else None
    if not isinstance(n, int) or isinstance(n, bool):
        raise malformed(provider, f"a token count has no {field}")
    return n


def body_events(provider: str, body: bytes, read: Callable[[Any, list[Event]], None]) -> list[Event]:
    """A non-streaming body as events: ``read(json, out)`` appends them.

    A body that is not JSON gives one ``Error`` (``malformed_response``); a shape
    ``read`` cannot take (one of :data:`SHAPE_ERRORS`) adds an ``Error`` after the
    events read so far.
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return [Error(malformed(provider, f"the response body is not valid JSON: {exc}"))]
    out: list[Event] = []
    try:
        read(obj, out)
    except SHAPE_ERRORS as exc:
        out.append(Error(shape_error(provider, "body", exc)))
    return out


def dropped(
    setting: str, provider: str | None, by: str, kind: WarningKind = "dropped_setting", what: str | None = None
) -> CallWarning:
    """The warning for ``setting`` not sent: ``"<what> is not supported by <by> and was not sent"``
    (``what`` defaults to ``setting``; ``"image detail"`` reads better than ``"detail"``)."""
    return CallWarning(kind, setting, provider, f"{what or setting} is not supported by {by} and was not sent")


def copy_settings(
    value: Any,
    names: Iterable[str],
    accepted: Container[str],
    into: dict[str, Any],
    warnings: list[CallWarning],
    provider: str,
    by: str,
) -> None:
    """Each field of ``names`` set on ``value`` (not ``None``): into ``into`` when ``accepted``
    holds it, else a :func:`dropped` warning naming ``by``."""
    for name in names:
        v = getattr(value, name)
        if v is None:
            continue
        if name in accepted:
            into[name] = v
        else:
            warnings.append(dropped(name, provider, by))


OPTION_SETTINGS = ("min_p", "repetition_penalty")
"""Sampler settings that are not :class:`~allm.types.Request` fields: given in
``Request.options``, sent only to servers that take them (llama.cpp, vLLM, OpenRouter)."""


def option_settings(
    options: Mapping[str, Any],
    accepted: Container[str],
    into: dict[str, Any],
    warnings: list[CallWarning],
    provider: str,
    by: str,
    renames: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``options`` without :data:`OPTION_SETTINGS`; each of those set (not ``None``) goes into
    ``into`` (under ``renames``' wire name) when ``accepted`` holds it, else a :func:`dropped`
    warning naming ``by``."""
    rest = dict(options)
    for name in OPTION_SETTINGS:
        value = rest.pop(name, None)
        if value is None:
            continue
        if name in accepted:
            into[(renames or {}).get(name, name)] = value
        else:
            warnings.append(dropped(name, provider, by))
    return rest


def note(warnings: list[CallWarning], warning: CallWarning) -> None:
    """Append ``warning`` unless an equal one is already there."""
    if warning not in warnings:
        warnings.append(warning)


class SSEStreamDecoder:
    """The byte side every SSE-based decoder shares.

    ``feed``/``close`` run the incremental :class:`~allm.sse.SSEDecoder` and hand the
    ``(event name, data)`` items to the subclass's ``_on_items``, which appends events
    to ``out`` and sets ``finished`` when the provider's terminal marker arrives (or
    calls ``_fail``). Ending without the marker calls ``_end``: by default an
    ``Error`` (``malformed_response``) naming ``terminal_marker``. After ``finished``,
    input is ignored.
    """

    __slots__ = ("_sse", "failed", "finished", "provider")

    terminal_marker = "its terminal marker"
    item = "chunk"  # what one SSE data item is called in errors ("chunk", "event")

    def __init__(self, provider: str) -> None:
        from ..sse import SSEDecoder

        self.provider = provider
        self._sse = SSEDecoder()
        self.finished = False  # the terminal marker was seen, or the stream failed
        self.failed = False

    def feed(self, chunk: bytes) -> list[Event]:
        if self.finished:
            return []
        out: list[Event] = []
        self._on_items(self._sse.feed(chunk), out)
        return out

    def close(self) -> list[Event]:
        if self.finished:
            return []
        out: list[Event] = []
        self._on_items(self._sse.close(), out)
        if not self.finished:
            self._end(out)
        return out

    def _on_items(self, items: list[tuple[str | None, bytes]], out: list[Event]) -> None:
        """Every item through :meth:`_json_item` until the stream finishes (subclasses with
        items that are not JSON, such as ``[DONE]``, handle those first)."""
        for name, data in items:
            self._json_item(name, data, out)
            if self.finished:
                return

    def _json_item(self, name: str | None, data: bytes, out: list[Event]) -> None:
        """One item's JSON to :meth:`_on_json`. An item that is not JSON, a shape ``_on_json``
        cannot read (one of :data:`SHAPE_ERRORS`) or an error it returns fails the stream."""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            self._fail(out, malformed(self.provider, f"a stream {self.item} is not valid JSON: {exc}"))
            return
        try:
            err = self._on_json(name, obj, out)
        except SHAPE_ERRORS as exc:
            self._bad_shape(out, exc)
            return
        if err is not None:
            self._fail(out, err)

    def _on_json(self, name: str | None, obj: Any, out: list[Event]) -> AdapterError | None:
        """Append the events of one item (``name``: its SSE ``event:``); an error it returns fails the stream."""
        raise NotImplementedError

    def _end(self, out: list[Event]) -> None:
        self._fail(out, malformed(self.provider, f"the stream ended before {self.terminal_marker}"))

    def _fail(self, out: list[Event], error: AdapterError) -> None:
        self.failed = self.finished = True
        out.append(Error(error))

    def _bad_shape(self, out: list[Event], exc: Exception) -> None:
        """Fail: one stream item is JSON of a shape the decoder cannot read."""
        self._fail(out, shape_error(self.provider, self.item, exc))
