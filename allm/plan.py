"""A call ready to make: :class:`Plan`, and :func:`plan_call`, the one function that builds it.

Every call allm makes (a model call, an embedding batch, a model list, a token count, an
image operation, fetching an image URL) is planned here, purely: the adapter's
:class:`~allm.providers.base.HttpCall` (or, for a local adapter such as the Fake, the
request it will play), the key resolved through the key chain (:mod:`allm.keys`), the
auth headers, the retry policy, the deadlines and the event filters. The shells in
:mod:`allm._transport` perform a plan through :class:`~allm.machine.CallMachine`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypedDict, TypeVar, Unpack

import attrs

from . import keys, telemetry
from .errors import AdapterError, EngineError, redact
from .events import Event
from .policy import RetryInfo, RetryPolicy, Timeouts, as_retry_policy
from .providers.base import HttpAdapter, HttpCall, LocalAdapter
from .types import Request

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["ErrorMap", "Exchanges", "Plan", "PlanOptions", "adapter_kind", "plan_call"]

OnEvent = Callable[[Event], None]
T = TypeVar("T")


class ErrorMap(Protocol):
    """What maps an HTTP error answer to a typed error (an adapter, or an operation's own mapping)."""

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> AdapterError: ...


@attrs.define(slots=True, eq=False, repr=False, getstate_setstate=False, kw_only=True)
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

    adapter: Any
    call: HttpCall | None
    headers: dict[str, str]
    secret: str | None
    retry: RetryPolicy
    timeouts: Timeouts
    request: Request | None = None
    errors: ErrorMap = attrs.field(default=None)
    once: bool = False
    include_raw: bool = False
    emit_text: bool = True
    emit_tool: bool = True
    on_event: OnEvent | None = None
    on_retry: Callable[[RetryInfo], None] | None = None
    provider: str | None = attrs.field(init=False)
    respond: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.errors is None:
            self.errors = self.adapter
        call = self.call
        self.provider = call.provider if call is not None else getattr(self.adapter, "provider", "fake")
        self.respond = call is not None and adapter_kind(self.adapter) == "local"

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


class Exchanges(Generic[T]):
    """Plain request/response calls (model lists, embedding batches, token counts, images,
    image downloads) as data: their ``plans``, and ``finish``, which turns their answers
    (``(status, headers, body)`` each, in order) into the result. Performed by
    :func:`allm.api.perform` (in order) or :func:`allm.api.aperform` (concurrently);
    ``finish`` runs with no plan at all for an operation answered without a call."""

    __slots__ = ("finish", "plans")

    def __init__(self, plans: Sequence[Plan], finish: Callable[[list[tuple[int, Mapping[str, str], bytes]]], T]) -> None:
        self.plans = list(plans)
        self.finish = finish


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


class PlanOptions(TypedDict, total=False):
    """Keyword options of :func:`plan_call` (each one a :class:`Plan` field, but ``api_key``):
    ``request`` (what a local adapter plays), ``errors``, ``once``, the event filters
    ``include_raw``/``emit_text``/``emit_tool``/``on_event``, and ``on_retry``."""

    request: Request | None
    errors: ErrorMap | None
    once: bool
    include_raw: bool
    emit_text: bool
    emit_tool: bool
    on_event: OnEvent | None
    on_retry: Callable[[RetryInfo], None] | None


def plan_call(
    engine: Engine | None,
    call: HttpCall | None,
    *,
    adapter: Any = None,
    api_key: str | None = None,
    retry: RetryPolicy | bool | None = None,
    timeouts: Timeouts | None = None,
    **options: Unpack[PlanOptions],
) -> Plan:
    """The :class:`Plan` of one call.

    ``call`` is what the adapter encoded (``None`` with a local adapter, which plays
    ``request``). ``adapter`` defaults to the engine's; ``retry`` and ``timeouts`` to the
    engine's (or the defaults without an engine; ``retry=False``: no retries). The key is
    resolved here, through the chain of :mod:`allm.keys` (call > scope > store > configure
    > environment), for the adapter's ``key_spec``; an adapter without one (a plain URL
    fetch) sends no key. ``options``: :class:`PlanOptions`.

    Raises :class:`~allm.errors.EngineError` (``missing_key``) when the adapter needs a
    key and none is found.
    """
    if adapter is None:
        if engine is None:
            raise EngineError("plan_call needs an engine or an adapter", reason="missing_adapter")
        adapter = engine.adapter
    policy = as_retry_policy(retry)
    if policy is None:
        policy = engine.retry if engine is not None else RetryPolicy()
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
    plan = Plan(adapter=adapter, call=call, headers=headers, secret=key, retry=policy, timeouts=timeouts, **options)  # type: ignore[arg-type]
    if telemetry.active:
        telemetry.planned(plan)
    return plan
