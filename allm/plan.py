"""A call ready to make: :class:`Plan`, and :func:`plan_call`, the one function that builds it.

Every call allm makes (a model call, an embedding batch, a model list, a token count, an
image operation, fetching an image URL) is planned here, purely: the adapter's
:class:`~allm.providers.base.HttpCall` (or, for a local adapter such as the Fake, the
request it will play), the key resolved through the key chain (:mod:`allm.keys`), the
auth headers, the retry policy, the deadlines and the event filters. The shells in
:mod:`allm._transport` perform a plan through :class:`~allm.machine.CallMachine`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from . import keys, telemetry
from .errors import AdapterError, EngineError, redact
from .events import Event
from .policy import RetryInfo, RetryPolicy, Timeouts, as_retry_policy
from .providers.base import HttpAdapter, HttpCall, LocalAdapter
from .types import Request

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["ErrorMap", "Plan", "adapter_kind", "plan_call"]

OnEvent = Callable[[Event], None]


class ErrorMap(Protocol):
    """What maps an HTTP error answer to a typed error (an adapter, or an operation's own mapping)."""

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError: ...


class Plan:
    """One call ready to make. Holds the auth headers only for the call's lifetime; never shown.

    - ``adapter``: the adapter (its ``decoder``/``decode_body`` read the answer); ``errors``
      maps error answers (the adapter itself unless an operation has its own mapping).
    - ``call``: the :class:`~allm.providers.base.HttpCall` (``None`` for a local adapter);
      ``request``: what a local adapter plays (``None`` for HTTP).
    - ``once``: a plain request/response (model lists, embeddings...): the body is returned
      as bytes, not decoded into events. A local adapter answers such a call in process
      (``adapter.respond(call)``); ``respond`` says so.
    - ``include_raw``, ``emit_text``, ``emit_tool``, ``on_event``: the event filters of
      :func:`allm.stream_generate`.
    """

    __slots__ = (
        "adapter",
        "call",
        "emit_text",
        "emit_tool",
        "errors",
        "headers",
        "include_raw",
        "on_event",
        "on_retry",
        "once",
        "provider",
        "request",
        "respond",
        "retry",
        "secret",
        "timeouts",
    )

    def __init__(
        self,
        adapter: Any,
        call: HttpCall | None,
        headers: dict[str, str],
        secret: str | None,
        *,
        retry: RetryPolicy,
        timeouts: Timeouts,
        request: Request | None = None,
        errors: ErrorMap | None = None,
        once: bool = False,
        include_raw: bool = False,
        emit_text: bool = True,
        emit_tool: bool = True,
        on_event: OnEvent | None = None,
        on_retry: Callable[[RetryInfo], None] | None = None,
    ) -> None:
        self.adapter = adapter
        self.call = call
        self.request = request
        self.headers = headers
        self.secret = secret
        self.errors: ErrorMap = errors if errors is not None else adapter
        self.once = once
        self.include_raw = include_raw
        self.emit_text = emit_text
        self.emit_tool = emit_tool
        self.on_event = on_event
        self.retry = retry
        self.timeouts = timeouts
        self.on_retry = on_retry
        self.provider: str | None = call.provider if call is not None else getattr(adapter, "provider", "fake")
        self.respond = call is not None and adapter_kind(adapter) == "local"

    @property
    def local(self) -> bool:
        """Whether the adapter plays the call in process (no HTTP)."""
        return self.call is None

    def __repr__(self) -> str:
        if self.call is None:
            return f"Plan(local {type(self.adapter).__name__})"
        return f"Plan({self.call.method} {redact(self.call.url, self.secret)})"

    def __getstate__(self) -> None:
        raise TypeError("a Plan holds a key and cannot be pickled")


_KINDS: dict[type[Any], str] = {}


def adapter_kind(adapter: object) -> str:
    """``"local"``, ``"http"`` or ``""``. A runtime protocol check costs tens of µs; adapters get
    their methods from their class, so the answer is kept per class."""
    cls = type(adapter)
    kind = _KINDS.get(cls)
    if kind is None:
        kind = "local" if isinstance(adapter, LocalAdapter) else "http" if isinstance(adapter, HttpAdapter) else ""
        _KINDS[cls] = kind
    return kind


def plan_call(
    engine: Engine | None,
    call: HttpCall | None,
    *,
    adapter: Any = None,
    request: Request | None = None,
    api_key: str | None = None,
    retry: RetryPolicy | bool | None = None,
    timeouts: Timeouts | None = None,
    on_retry: Callable[[RetryInfo], None] | None = None,
    errors: ErrorMap | None = None,
    once: bool = False,
    include_raw: bool = False,
    emit_text: bool = True,
    emit_tool: bool = True,
    on_event: OnEvent | None = None,
) -> Plan:
    """The :class:`Plan` of one call.

    ``call`` is what the adapter encoded (``None`` with a local adapter, which plays
    ``request``). ``adapter`` defaults to the engine's; ``retry`` and ``timeouts`` to the
    engine's (or the defaults without an engine). The key is resolved here, through the
    chain of :mod:`allm.keys` (call > scope > store > configure > environment), for the
    adapter's ``key_spec``; an adapter without one (a plain URL fetch) sends no key.

    Raises :class:`~allm.errors.EngineError` (``missing_key``) when the adapter needs a
    key and none is found.
    """
    if adapter is None:
        if engine is None:
            raise EngineError("plan_call needs an engine or an adapter", reason="missing_adapter")
        adapter = engine.adapter
    retry = as_retry_policy(retry)
    if retry is None:
        retry = engine.retry if engine is not None else RetryPolicy()
    if timeouts is None:
        timeouts = engine.timeouts if engine is not None else Timeouts()
    key: str | None = None
    headers: dict[str, str] = {}
    if call is not None:
        headers = dict(call.headers)
        spec = getattr(adapter, "key_spec", None)
        if spec is not None:
            key = keys.resolve(spec.provider, spec.env, api_key, required=spec.required)
            headers.update(adapter.auth_headers(key))
    plan = Plan(
        adapter,
        call,
        headers,
        key,
        retry=retry,
        timeouts=timeouts,
        request=request,
        errors=errors,
        once=once,
        include_raw=include_raw,
        emit_text=emit_text,
        emit_tool=emit_tool,
        on_event=on_event,
        on_retry=on_retry,
    )
    if telemetry.active:
        telemetry.planned(plan)
    return plan
