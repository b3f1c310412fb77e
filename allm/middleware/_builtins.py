"""The built-in middleware: :class:`TokenBudget`, :class:`RateLimit`, :class:`ContentFilter`,
:class:`RequestLog`, and :func:`from_spec` to build them from plain data."""

from __future__ import annotations

import atexit
import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import orjson

from ..errors import AllmError, redact
from ..events import ChatCompleted, Event, StepCompleted
from ..tools import ToolOutcome
from ..types import Request, Response, ToolCall, Usage
from ._core import Refuse, Run, Stop
from ._limits import Limits, MemoryLimits, RedisLimits
from ._pipeline import Pipeline, check_name

__all__ = ["ContentFilter", "RateLimit", "RequestLog", "TokenBudget", "from_spec"]

KeyOf = str | Callable[[Run], Any] | None
"""Which key a run counts under: ``None`` (one key for every run), a string (the name of an
entry of the run's ``context``: ``"tenant"``), or a function ``run -> key``."""

#: Counts shared by every built-in given no ``limits`` (per process).
SHARED = MemoryLimits()
_redis: dict[tuple[str, str], RedisLimits] = {}
_redis_lock = threading.Lock()


def _limits(value: Limits | str | None) -> Limits:
    """``None``: :data:`SHARED`; a ``redis://`` URL: one :class:`RedisLimits` per URL in this process."""
    if value is None:
        return SHARED
    if isinstance(value, str):
        with _redis_lock:
            found = _redis.get((value, "allm:limits:"))
            if found is None:
                if not _redis:
                    atexit.register(_close_redis)
                found = _redis[(value, "allm:limits:")] = RedisLimits(value)
            return found
    if not isinstance(value, Limits):
        raise TypeError(f"limits is a MemoryLimits, a RedisLimits, a redis:// URL or None, not {type(value).__name__}")
    return value


def _close_redis() -> None:
    """At exit: close the clients of the per-URL :class:`RedisLimits` (their connections end
    with a close, not as sockets left to the interpreter's teardown)."""
    with _redis_lock:
        found = list(_redis.values())
        _redis.clear()
    for limits in found:
        with contextlib.suppress(Exception):  # the server may be gone by now
            limits.close()


def _positive(what: str, v: Any, *, integer: bool = False, optional: bool = False) -> None:
    if v is None and optional:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(v, bool) or not isinstance(v, kinds) or not 0 < v < float("inf"):
        raise ValueError(f"{what} must be a positive {'int' if integer else 'number'}{' or None' if optional else ''}, not {v!r}")


def _key_of(owner: str, key: KeyOf, run: Run) -> str:
    if key is None:
        return "*"
    k = key(run) if callable(key) else run.context.get(key)
    if k is None or k == "":
        where = f"context[{key!r}]" if isinstance(key, str) else "its key function"
        raise ValueError(f"{owner} counts per key, and this run has none ({where} is empty)")
    return str(k)


def _tokens(usage: Usage, count: str) -> int:
    if count == "input":
        return usage.input_tokens or 0
    if count == "output":
        return usage.output_tokens or 0
    if usage.total_tokens is not None:
        return usage.total_tokens
    return (usage.input_tokens or 0) + (usage.output_tokens or 0)


# ------------------------------------------------------------------------------ token budget


class TokenBudget:
    """Stops a run before a model call once ``max_tokens`` tokens are spent (``halted_reason``
    its ``name``, ``token_budget`` by default).

    - ``per="call"``: the tokens of this run (one ``chat``/``stream``/``step`` call or session
      operation), from the run's usage.
    - ``per="chat"``: the tokens of the conversation: counted under the session's id across its
      operations (in ``limits``; a run without a session id counts as its own chat).
    - ``per="key"``: the tokens of a key (``key``: a context entry's name or ``run -> key``)
      in each ``window`` seconds (fixed windows; ``None``: for ever), in ``limits``.

    ``count``: ``"total"`` (``total_tokens``, else input + output), ``"input"`` or ``"output"``;
    a counter the provider did not report counts 0. ``limits``: :class:`MemoryLimits`, a
    :class:`RedisLimits` or a ``redis://`` URL (shared by processes); by default one
    in-process counter set. The budget is checked before each call and charged after it, so
    calls already under way when it runs out may go past it (each call by at most its own
    usage): cap ``max_tokens`` on the request for a hard bound per call.

    ``name``: the stop's ``halted_reason`` and the namespace of its counts (budgets with
    different names count apart; register a configured budget under its own name).
    The stop's ``metadata["stopped_by"]``: ``budget`` (``per``), ``max_tokens``,
    ``spent_tokens``, and ``key`` / ``window`` or ``session_id`` where they apply.
    Raises ``ValueError`` for a bad argument; a ``per="key"`` run without a key fails the run
    (``EngineError``, ``middleware_failed``).
    """

    name = "token_budget"

    def __init__(
        self,
        max_tokens: int,
        *,
        per: Literal["call", "chat", "key"] = "call",
        key: KeyOf = None,
        window: float | None = None,
        count: Literal["total", "input", "output"] = "total",
        limits: Limits | str | None = None,
        name: str | None = None,
    ) -> None:
        _positive("max_tokens", max_tokens, integer=True)
        _positive("window", window, optional=True)
        if per not in ("call", "chat", "key"):
            raise ValueError(f"per must be 'call', 'chat' or 'key', not {per!r}")
        if per == "key" and key is None:
            raise ValueError("per='key' needs key= (a context entry's name or a function run -> key)")
        if count not in ("total", "input", "output"):
            raise ValueError(f"count must be 'total', 'input' or 'output', not {count!r}")
        self.max_tokens = max_tokens
        self.per = per
        self.key = key
        self.window = window if per == "key" else None
        self.count = count
        self.limits = _limits(limits)
        self.name = check_name(name) if name is not None else type(self).name
        Stop(self.name)  # the name must be usable as a halted_reason

    def __repr__(self) -> str:
        return f"TokenBudget({self.max_tokens}, per={self.per!r}, name={self.name!r})"

    def _counter(self, run: Run) -> tuple[str | None, dict[str, Any]]:
        if self.per == "key":
            k = _key_of(self.name, self.key, run)
            return f"{self.name}|key|{k}", {"key": k, "window": self.window}
        if self.per == "chat" and run.session_id is not None:
            return f"{self.name}|chat|{run.session_id}", {"session_id": run.session_id}
        return None, {}

    def _verdict(self, spent: int, where: Mapping[str, Any]) -> Stop | None:
        if spent < self.max_tokens:
            return None
        return Stop(
            self.name,
            f"the {self.per} budget of {self.max_tokens} tokens is spent ({spent})",
            {"budget": self.per, "max_tokens": self.max_tokens, "spent_tokens": spent, **where},
        )

    def before_model(self, run: Run, request: Request) -> Stop | None:
        counter, where = self._counter(run)
        spent = _tokens(run.usage, self.count) if counter is None else self.limits.total(counter, self.window)
        return self._verdict(spent, where)

    async def abefore_model(self, run: Run, request: Request) -> Stop | None:
        counter, where = self._counter(run)
        spent = _tokens(run.usage, self.count) if counter is None else await self.limits.atotal(counter, self.window)
        return self._verdict(spent, where)

    def after_model(self, run: Run, response: Response) -> None:
        counter, _ = self._counter(run)
        if counter is not None:
            self.limits.add(counter, _tokens(response.usage, self.count), self.window)

    async def aafter_model(self, run: Run, response: Response) -> None:
        counter, _ = self._counter(run)
        if counter is not None:
            await self.limits.aadd(counter, _tokens(response.usage, self.count), self.window)


# ------------------------------------------------------------------------------ rate limit


class RateLimit:
    """Admits at most ``limit`` model calls per key in any ``window`` seconds (a sliding
    window); the next one stops the run before the call (``halted_reason`` its ``name``,
    ``rate_limit`` by default) with ``metadata["stopped_by"]`` = ``key``, ``limit``,
    ``window`` and ``retry_after`` (seconds until a call would be admitted).

    ``key``: ``None`` (one limit for every run), a context entry's name (``"tenant"``) or a
    function ``run -> key``; a run without its key fails (``EngineError``,
    ``middleware_failed``). ``limits``: :class:`MemoryLimits` (one process), a
    :class:`RedisLimits` or a ``redis://`` URL (every process sharing the server shares the
    limit); by default one in-process counter set. Each admission is one atomic step
    (a lock, or one Lua script in Redis). ``name``: the stop's ``halted_reason`` and the
    namespace of its counts (limits with different names count apart; register a configured
    limit under its own name). Keys are reported and kept in Redis key names: use ids (a
    tenant, a user), never a secret. Raises ``ValueError`` for a bad argument.
    """

    name = "rate_limit"

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        key: KeyOf = None,
        limits: Limits | str | None = None,
        name: str | None = None,
    ) -> None:
        _positive("limit", limit, integer=True)
        _positive("window", window)
        self.limit = limit
        self.window = window
        self.key = key
        self.limits = _limits(limits)
        self.name = check_name(name) if name is not None else type(self).name
        Stop(self.name)

    def __repr__(self) -> str:
        return f"RateLimit({self.limit}, {self.window:g}, name={self.name!r})"

    def _verdict(self, k: str, admission: Any) -> Stop | None:
        if admission.allowed:
            return None
        return Stop(
            self.name,
            f"more than {self.limit} model calls in {self.window:g} s for this key",
            {"key": k, "limit": self.limit, "window": self.window, "retry_after": admission.retry_after},
        )

    def before_model(self, run: Run, request: Request) -> Stop | None:
        k = _key_of(self.name, self.key, run)
        return self._verdict(k, self.limits.hit(f"{self.name}|{k}", self.limit, self.window))

    async def abefore_model(self, run: Run, request: Request) -> Stop | None:
        k = _key_of(self.name, self.key, run)
        return self._verdict(k, await self.limits.ahit(f"{self.name}|{k}", self.limit, self.window))


# ------------------------------------------------------------------------------ content filter


def _compile(patterns: Iterable[str | re.Pattern[str]], ignore_case: bool) -> tuple[re.Pattern[str], ...]:
    if isinstance(patterns, (str, re.Pattern)):
        patterns = [patterns]
    out = []
    for p in patterns:
        if isinstance(p, re.Pattern):
            out.append(p)
        elif isinstance(p, str) and p:
            try:
                out.append(re.compile(p, re.IGNORECASE if ignore_case else 0))
            except re.error as exc:
                raise ValueError(f"the deny pattern {p!r} is not a regular expression: {exc}") from None
        else:
            raise ValueError(f"a deny pattern is a non-empty str or a compiled pattern, not {p!r}")
    if not out:
        raise ValueError("a ContentFilter needs at least one deny pattern")
    return tuple(out)


class ContentFilter:
    """Blocks text matching any ``deny`` pattern (regular expressions, ``re.search``; case
    is ignored unless ``ignore_case=False``):

    - ``input``: every message a model call would send (their text): the run stops before
      the call.
    - ``output``: the response's text: the run stops after the call; the response's message
      is not added to the thread (it stays in the last step, and streamed text deltas have
      reached the caller already: fold the events, or hold them, to withhold it).
    - ``tools``: a tool call's arguments: the call is refused (the model reads the refusal).

    Stops have ``halted_reason`` its ``name`` (``content_filter``) and
    ``metadata["stopped_by"]`` = ``direction`` (``input``/``output``), ``pattern`` and, for
    input, ``message_index`` and ``role``. The matched text itself is never reported.
    Raises ``ValueError`` for no pattern or one that does not compile.
    """

    name = "content_filter"

    def __init__(
        self,
        deny: Iterable[str | re.Pattern[str]],
        *,
        input: bool = True,
        output: bool = True,
        tools: bool = True,
        ignore_case: bool = True,
        name: str | None = None,
    ) -> None:
        self.patterns = _compile(deny, ignore_case)
        self.name = check_name(name) if name is not None else type(self).name
        Stop(self.name)
        self.input, self.output, self.tools = input, output, tools

    def __repr__(self) -> str:
        return f"ContentFilter({[p.pattern for p in self.patterns]!r}, name={self.name!r})"

    def _match(self, text: str) -> re.Pattern[str] | None:
        for p in self.patterns:
            if p.search(text):
                return p
        return None

    def before_model(self, run: Run, request: Request) -> Stop | None:
        if not self.input:
            return None
        for i, m in enumerate(request.messages):
            p = self._match(m.text)
            if p is not None:
                return Stop(
                    self.name,
                    "the input matches a denied pattern",
                    {"direction": "input", "pattern": p.pattern, "message_index": i, "role": m.role},
                )
        return None

    def after_model(self, run: Run, response: Response) -> Stop | None:
        p = self._match(response.output_text) if self.output else None
        if p is not None:
            return Stop(self.name, "the output matches a denied pattern", {"direction": "output", "pattern": p.pattern})
        return None

    def before_tool(self, run: Run, call: ToolCall) -> Refuse | None:
        p = self._match(call.raw_arguments) if self.tools else None
        return Refuse("the arguments match a denied pattern", {"pattern": p.pattern}) if p is not None else None


# ------------------------------------------------------------------------------ request log

_SECRET_NAME = re.compile(r"(?i)(key|token|secret|password|passwd|auth|credential|cookie|session_token)")


def _clean(value: Any) -> Any:
    """JSON-native and key-free: strings through :func:`allm.errors.redact`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value))


class RequestLog:
    """Logs each model call, response, tool call, tool result, step and chat end as one
    structured record through :mod:`logging` (logger ``allm.middleware`` by default, at
    ``level``): the message is ``"<kind> <JSON>"`` and the record carries the same dict as
    ``record.allm`` (``kind`` plus fields), for JSON handlers.

    Kinds and fields (all runs have ``run_id``, ``session_id``, ``turn``): ``model_call``
    (``model``, ``messages`` count, ``tools`` names, ``context``), ``model_response``
    (``response_id``, ``finish_reason``, ``input_tokens``, ``output_tokens``,
    ``total_tokens``, ``tool_calls`` names, ``error`` reason and message), ``tool_call``
    (``tool_name``, ``tool_call_id``), ``tool_result`` (``tool_name``, ``tool_call_id``,
    ``ok``, ``error_reason``), ``step`` (``halted_reason``), ``chat`` (``halted_reason``,
    ``steps``, ``stopped_by``). ``events=True`` adds an ``event`` record (its type) per event
    at DEBUG.

    Each record is what reached the log at its place in the pipeline: a ``model_call`` logged
    before a later middleware stopped the run was not made (the ``chat`` record says why);
    put the log last to record only the calls that are sent.

    No key is logged: no message content unless ``content=True`` (then the last input
    message's and the output's text), only the context entries named in ``context_keys``,
    entries whose name looks secret (``key``, ``token``, ``secret``, ``password``, ``auth``
    ...) as ``[redacted]``, and every string through :func:`allm.errors.redact` (provider key
    shapes, bearer tokens, masked keys). A key pasted into content in another shape is not
    recognisable: keep ``content`` off where that can happen.
    """

    name = "request_log"

    def __init__(
        self,
        logger: str | logging.Logger = "allm.middleware",
        *,
        level: int | str = logging.INFO,
        content: bool = False,
        context_keys: Sequence[str] = (),
        events: bool = False,
        name: str | None = None,
    ) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = logging.getLevelName(level.upper()) if isinstance(level, str) else level
        if not isinstance(self.level, int):
            raise ValueError(f"level must be a logging level, not {level!r}")
        self.content = content
        self.context_keys = tuple(context_keys)
        self.events = events
        self.name = check_name(name) if name is not None else type(self).name

    def __repr__(self) -> str:
        return f"RequestLog({self.logger.name!r}, name={self.name!r})"

    def _log(self, kind: str, run: Run, fields: Mapping[str, Any], level: int | None = None) -> None:
        level = self.level if level is None else level
        if not self.logger.isEnabledFor(level):
            return
        data = _clean({"kind": kind, "run_id": run.id, "session_id": run.session_id, "turn": run.turn, **fields})
        self.logger.log(level, "%s %s", kind, orjson.dumps(data).decode(), extra={"allm": data})

    def before_model(self, run: Run, request: Request) -> None:
        fields: dict[str, Any] = {
            "model": request.model,
            "messages": len(request.messages),
            "tools": [t.name for t in request.tools],
        }
        if self.context_keys:
            ctx = run.context
            fields["context"] = {k: "[redacted]" if _SECRET_NAME.search(k) else ctx[k] for k in self.context_keys if k in ctx}
        if self.content and request.messages:
            fields["input"] = request.messages[-1].text
        self._log("model_call", run, fields)

    def after_model(self, run: Run, response: Response) -> None:
        u = response.usage
        fields: dict[str, Any] = {
            "response_id": response.id,
            "finish_reason": response.finish_reason,
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "total_tokens": u.total_tokens,
            "tool_calls": [c.name for c in response.tool_calls],
        }
        err = response.metadata.get("error")
        if isinstance(err, AllmError):
            fields["error"] = {"reason": err.reason, "message": err.message}
        if self.content:
            fields["output"] = response.output_text
        self._log("model_response", run, fields)

    def before_tool(self, run: Run, call: ToolCall) -> None:
        self._log("tool_call", run, {"tool_name": call.name, "tool_call_id": call.id})

    def after_tool(self, run: Run, outcome: ToolOutcome) -> None:
        err = outcome.error
        self._log(
            "tool_result",
            run,
            {
                "tool_name": outcome.call.name,
                "tool_call_id": outcome.call.id,
                "ok": err is None,
                "error_reason": err.reason if err is not None else None,
            },
        )

    def on_event(self, run: Run, event: Event) -> None:
        t = type(event)
        if t is StepCompleted:
            self._log("step", run, {"halted_reason": event.step.halted_reason})  # type: ignore[union-attr]
        elif t is ChatCompleted:
            r = event.result  # type: ignore[union-attr]
            self._log(
                "chat", run, {"halted_reason": r.halted_reason, "steps": len(r.steps), "stopped_by": r.metadata.get("stopped_by")}
            )
        elif self.events:
            self._log("event", run, {"type": t.__name__}, logging.DEBUG)


# ------------------------------------------------------------------------------ specs

_BUILDERS: dict[str, tuple[type[Any], frozenset[str]]] = {
    "token_budget": (TokenBudget, frozenset({"max_tokens", "per", "key", "window", "count", "limits", "redis", "name"})),
    "rate_limit": (RateLimit, frozenset({"limit", "window", "key", "limits", "redis", "name"})),
    "content_filter": (ContentFilter, frozenset({"deny", "input", "output", "tools", "ignore_case", "name"})),
    "request_log": (RequestLog, frozenset({"logger", "level", "content", "context_keys", "events", "name"})),
}


def from_spec(spec: str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]]) -> Any:
    """A pipeline entry (or, for a list, a :class:`Pipeline`) from plain data, as a config
    file holds it::

        {"use": "rate_limit", "limit": 60, "window": 60, "key": "tenant", "redis": "redis://..."}
        {"use": "token_budget", "max_tokens": 100000, "per": "key", "key": "tenant", "window": 3600}
        {"use": "content_filter", "deny": ["(?i)password"]}
        {"use": "request_log", "level": "INFO", "context_keys": ["tenant"]}
        "my_registered_name"         # or {"use": "my_registered_name"} with no other field

    ``use`` names a built-in (its keyword arguments follow; ``redis`` is ``limits`` as a URL)
    or, with no other field, a registered name (looked up when a run starts). Raises
    ``ValueError`` for an unknown field or a bad value, ``TypeError`` for a spec of another shape.
    """
    if isinstance(spec, str):
        return check_name(spec)
    if isinstance(spec, Mapping):
        use = spec.get("use")
        fields = {k: v for k, v in spec.items() if k != "use"}
        if not isinstance(use, str):
            raise ValueError(f"a middleware spec needs 'use' (a built-in or registered name), got {dict(spec)!r}")
        if use not in _BUILDERS:
            if fields:
                raise ValueError(
                    f"{use!r} is not a built-in middleware ({', '.join(sorted(_BUILDERS))}); "
                    "a registered name takes no other fields"
                )
            return check_name(use)
        cls, allowed = _BUILDERS[use]
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"{use} does not take {sorted(unknown)}; it takes {sorted(allowed)}")
        if "redis" in fields:
            if "limits" in fields:
                raise ValueError(f"{use} takes redis or limits, not both")
            fields["limits"] = fields.pop("redis")
        positional = {"token_budget": ("max_tokens",), "rate_limit": ("limit", "window"), "content_filter": ("deny",)}
        args = []
        for p in positional.get(use, ()):
            if p not in fields:
                raise ValueError(f"{use} needs {p!r}")
            args.append(fields.pop(p))
        return cls(*args, **fields)
    if isinstance(spec, Sequence):
        return Pipeline(tuple(from_spec(s) for s in spec))
    raise TypeError(f"a middleware spec is a name, a mapping or a list of them, not {type(spec).__name__}")
