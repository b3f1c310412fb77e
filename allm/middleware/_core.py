"""One run's middleware: :class:`Run`, the hooks' answers (:class:`Stop`, :class:`Refuse`),
and :class:`Chain`, whose hooks the tool loop's drivers perform and whose answers
(:class:`Verdict`) the loop decides on. Nothing here imports the loop."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ..ids import new_request_id
from ..types import Request, Response, ToolCall, Usage
from ._pipeline import Pipeline, check_name, entry_name, make

if TYPE_CHECKING:
    from ..engine import Engine
    from ..events import Event
    from ..tools import ToolOutcome

__all__ = ["Chain", "Refuse", "Run", "Stop", "Verdict", "open_chain"]

def _check_reason(_i: Any, _a: Any, v: Any) -> None:
    from ..tools import RESERVED_HALT_REASONS

    check_name(v, "stop reason")
    if v in RESERVED_HALT_REASONS:
        raise ValueError(f"the stop reason {v!r} is the loop's own ({', '.join(sorted(RESERVED_HALT_REASONS))})")


def _mapping(v: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(v) if v else {}


@attrs.frozen
class Stop:
    """What ``before_model`` or ``after_model`` returns to end the run: the chat ends with
    ``halted_reason=reason`` (by convention the middleware's name: ``token_budget``,
    ``rate_limit``, ``content_filter``) and ``metadata["stopped_by"]`` =
    ``{"middleware": <name>, "message": message, **metadata}``.

    ``reason`` is 1-64 of ``A-Z a-z 0-9 _ . : -`` and not one of the loop's own reasons
    (``completed``, ``error``, ``max_turns`` ...): ``ValueError`` otherwise. ``metadata`` must be
    JSON-native (it is stored with the result and with sessions' results).
    """

    reason: str = attrs.field(validator=_check_reason)
    message: str = ""
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=_mapping)


@attrs.frozen
class Refuse:
    """What ``before_tool`` returns to refuse a call: the handler does not run and the model
    reads a tool error (``ToolError`` reason ``refused``, message ``refused by <name>: <message>``,
    ``metadata`` merged into the error's). ``on_tool_error`` applies to it as to any tool error."""

    message: str = ""
    metadata: Mapping[str, Any] = attrs.field(factory=dict, converter=_mapping)


class Run:
    """One run of the tool loop (one ``chat``, ``stream``, ``step`` or session operation) as its
    middleware sees it; every hook receives it first. Made by the loop; not stored.

    - ``id``: ``run_`` and 22 URL-safe characters, new per run.
    - ``session_id``: the session's id (or the call's ``session_id=``), else ``None``.
    - ``context``: the handlers' context (``engine.context`` < ``session.context`` < the call's).
    - ``engine``: the engine running the loop (``None`` for a loop made by hand).
    - ``model``: the model of the run's requests (after the engine's default).
    - ``pipeline``: the names of the run's middleware, in order.
    - ``turn``: the index of the current (or last) model call of this run, from 0.
    - ``usage``: :class:`~allm.types.Usage` summed over this run's model calls so far
      (updated before ``after_model`` sees a response).
    - ``state``: a dict for middleware that keep per-run state (key it by your name).
    """

    __slots__ = ("context", "engine", "id", "model", "pipeline", "session_id", "state", "turn", "usage")

    def __init__(
        self,
        *,
        session_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        engine: Engine | None = None,
        model: str | None = None,
        pipeline: tuple[str, ...] = (),
    ) -> None:
        self.id = "run_" + new_request_id()
        self.session_id = session_id
        self.context: Mapping[str, Any] = context if context is not None else {}
        self.engine = engine
        self.model = model
        self.pipeline = pipeline
        self.turn = 0
        self.usage = Usage()
        self.state: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, session_id={self.session_id!r}, turn={self.turn}, pipeline={self.pipeline!r})"


# ------------------------------------------------------------------------------ one run's chain


@attrs.frozen
class Verdict:
    """What one consultation of the hooks decided, for :meth:`allm.loop.Loop.consulted`.

    - ``request``: before a model call, the request to send (rewritten or not).
    - ``stop``: a :class:`Stop`, from the middleware named ``by``.
    - ``refusals``: after a model call, ``{tool_call_id: (middleware name, Refuse)}``.
    - ``error``: what a hook of the middleware named ``by`` raised (or returned wrongly).
    """

    request: Request | None = None
    stop: Stop | None = None
    by: str | None = None
    refusals: Mapping[str, tuple[str, Refuse]] = attrs.field(factory=dict)
    error: BaseException | None = attrs.field(default=None, eq=False)


Hook = tuple[str, Any, Any]  # (middleware name, sync hook or None, async twin or None)
Ask = tuple[str, str, Any, Any, Any]  # (middleware name, point, sync hook, async twin, argument)


def _hooks(items: Sequence[tuple[str, Any]], point: str, twin: str | None) -> tuple[Hook, ...]:
    out = []
    for name, mw in items:
        fn = getattr(mw, point, None)
        afn = getattr(mw, twin, None) if twin else None
        if callable(fn) or callable(afn):
            out.append((name, fn if callable(fn) else None, afn if callable(afn) else None))
    return tuple(out)


def _sync(name: str, point: str, fn: Any, afn: Any, *args: Any) -> Any:
    if fn is None:
        raise TypeError(f"{name} has only an async {point} (a{point}): run it with achat, astream or astep")
    out = fn(*args)
    if inspect.isawaitable(out):
        if inspect.iscoroutine(out):
            out.close()
        raise TypeError(f"{name}.{point} is async: run it with achat, astream or astep")
    return out


async def _async(fn: Any, afn: Any, *args: Any) -> Any:
    out = (afn if afn is not None else fn)(*args)
    while inspect.isawaitable(out):
        out = await out
    return out


def _request_answer(name: str, out: Any) -> Request | Stop | None:
    if out is None or isinstance(out, (Request, Stop)):
        return out
    raise TypeError(f"{name}.before_model returned {type(out).__name__}; expected None, a Request or a Stop")


def _response_answer(name: str, out: Any) -> Stop | None:
    if out is None or isinstance(out, Stop):
        return out
    raise TypeError(f"{name}.after_model returned {type(out).__name__}; expected None or a Stop")


def _tool_answer(name: str, out: Any) -> Refuse | None:
    if out is None or isinstance(out, Refuse):
        return out
    raise TypeError(f"{name}.before_tool returned {type(out).__name__}; expected None or a Refuse")


class Chain:
    """The middleware of one run, built from a :class:`Pipeline` when the run starts (names are
    looked up, factories called). The loop calls :meth:`sink`, :meth:`notify` and
    :meth:`tool_done`; the drivers perform the consultations the loop hands them
    (``before_model``/``abefore_model``, ``after_model``/``aafter_model``), whose
    :class:`Verdict` goes back to the loop.

    Consultations never raise: what a hook raises (or a wrong return) is the verdict's
    ``error``. The observers (``on_event``, ``after_tool``) run inline, and what they raise
    propagates.
    """

    __slots__ = ("_after_model", "_after_tool", "_before_model", "_before_tool", "_on_event", "items", "run")

    def __init__(self, pipeline: Pipeline, run: Run) -> None:
        self.items = tuple((entry_name(e), make(e)) for e in pipeline.entries)
        self.run = run
        run.pipeline = tuple(n for n, _ in self.items)
        self._before_model = _hooks(self.items, "before_model", "abefore_model")
        self._after_model = _hooks(self.items, "after_model", "aafter_model")
        self._before_tool = _hooks(self.items, "before_tool", "abefore_tool")
        self._after_tool = tuple((n, f) for n, f, _ in _hooks(self.items, "after_tool", None))
        self._on_event = tuple(f for _, f, _ in _hooks(self.items, "on_event", None))

    @property
    def consults_model(self) -> bool:
        """Whether any middleware looks at requests before model calls."""
        return bool(self._before_model)

    @property
    def consults_response(self) -> bool:
        """Whether any middleware looks at responses or tool calls after model calls."""
        return bool(self._after_model or self._before_tool)

    @property
    def observes_events(self) -> bool:
        return bool(self._on_event)

    # -- consultations: one generator per point yields each hook to ask and decides on its
    # answers; _perform (sync) and _aperform (async) ask them.

    def before_model(self, request: Request) -> Verdict:
        return self._perform(self._model_steps(request))

    async def abefore_model(self, request: Request) -> Verdict:
        return await self._aperform(self._model_steps(request))

    def after_model(self, response: Response, calls: Sequence[ToolCall]) -> Verdict:
        """The response, then each tool call the loop would run."""
        return self._perform(self._response_steps(response, calls))

    async def aafter_model(self, response: Response, calls: Sequence[ToolCall]) -> Verdict:
        return await self._aperform(self._response_steps(response, calls))

    def _model_steps(self, request: Request) -> Generator[Ask, Any, Verdict]:
        for name, fn, afn in self._before_model:
            out = _request_answer(name, (yield name, "before_model", fn, afn, request))
            if isinstance(out, Stop):
                return Verdict(request, out, name)
            if out is not None:
                request = out
        return Verdict(request)

    def _response_steps(self, response: Response, calls: Sequence[ToolCall]) -> Generator[Ask, Any, Verdict]:
        for name, fn, afn in self._after_model:
            stop = _response_answer(name, (yield name, "after_model", fn, afn, response))
            if stop is not None:
                return Verdict(stop=stop, by=name)
        refusals: dict[str, tuple[str, Refuse]] = {}
        for call in calls:
            for name, fn, afn in self._before_tool:
                refused = _tool_answer(name, (yield name, "before_tool", fn, afn, call))
                if refused is not None:
                    refusals[call.id] = (name, refused)
                    break
        return Verdict(refusals=refusals)

    def _perform(self, steps: Generator[Ask, Any, Verdict]) -> Verdict:
        name = ""
        try:
            ask = next(steps)
            while True:
                name, point, fn, afn, arg = ask
                ask = steps.send(_sync(name, point, fn, afn, self.run, arg))
        except StopIteration as done:
            verdict: Verdict = done.value
            return verdict
        except Exception as exc:
            return Verdict(by=name, error=exc)

    async def _aperform(self, steps: Generator[Ask, Any, Verdict]) -> Verdict:
        name = ""
        try:
            ask = next(steps)
            while True:
                name, _point, fn, afn, arg = ask
                ask = steps.send(await _async(fn, afn, self.run, arg))
        except StopIteration as done:
            verdict: Verdict = done.value
            return verdict
        except Exception as exc:
            return Verdict(by=name, error=exc)

    # -- observers

    def sink(self, apply: Callable[[Event], None]) -> Callable[[Event], None]:
        """``apply`` followed by every ``on_event`` hook (``apply`` itself when there is none)."""
        hooks = self._on_event
        run = self.run
        if not hooks:
            return apply
        if len(hooks) == 1:
            (hook,) = hooks

            def one(ev: Event) -> None:
                apply(ev)
                hook(run, ev)

            return one

        def many(ev: Event) -> None:
            apply(ev)
            for h in hooks:
                h(run, ev)

        return many

    def notify(self, events: Iterable[Event]) -> None:
        """Hand events the loop made to the ``on_event`` hooks."""
        hooks = self._on_event
        if hooks:
            run = self.run
            for ev in events:
                for h in hooks:
                    h(run, ev)

    def tool_done(self, outcome: ToolOutcome, events: Iterable[Event]) -> None:
        """A tool call finished: its ``after_tool`` hooks, then its events to ``on_event``."""
        run = self.run
        for _name, fn in self._after_tool:
            fn(run, outcome)
        self.notify(events)


def open_chain(
    pipeline: Pipeline,
    *,
    session_id: str | None = None,
    context: Mapping[str, Any] | None = None,
    engine: Engine | None = None,
    model: str | None = None,
) -> Chain | None:
    """The chain of one run, or ``None`` for an empty pipeline. Raises
    :class:`~allm.errors.EngineError` (``unknown_middleware``) for a name nobody registered,
    and ``TypeError`` for a factory that makes no middleware."""
    if not pipeline.entries:
        return None
    return Chain(pipeline, Run(session_id=session_id, context=context, engine=engine, model=model))

