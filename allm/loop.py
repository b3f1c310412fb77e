"""The tool loop as a pure state machine, and the folds of its event streams.

:class:`Loop` decides; it never performs I/O, never imports a provider and never
reads a clock. A driver (sync or async, in :mod:`allm.driver`) asks it for the next
action and performs it::

    loop = Loop(thread, request, policy)
    while True:
        action = loop.next_action()
        emit(action.events)                         # events the loop produced
        match action:
            case CallModel(request=req):            # stream one model call, emit its
                loop.model_done(fold(call(req)))    # events, hand back the Response
            case RunTools(jobs=jobs, timeout=t):    # run handlers concurrently and
                for outcome in run(jobs, t):        # hand back each outcome as it
                    emit(loop.tool_done(outcome))   # finishes
            case Consult():                         # run the middleware's hooks and
                loop.consulted(action.perform())    # hand back their verdict
            case Finish(result=r):
                return r

So both drivers share every decision: which calls run, which are handed back,
how results and errors are encoded, when the loop halts and why, what the thread
looks like after each turn, and the structured-finalize pass (a phase of this
machine: one more tools-off call with the response format). The order of events
follows :mod:`allm.events`.

Middleware (:mod:`allm.middleware`) are points of this machine: with a pipeline, a
:class:`Consult` comes before each model call (its verdict may rewrite the request or
stop the run) and after it (it may stop the run, or refuse tool calls: a refusal is the
job's ``ToolError``); ``on_event`` hooks see every event (:meth:`Loop.sink` for a model
call's), ``after_tool`` hooks each outcome. Without one, nothing of it runs.

The loop's options are declared once, as the fields of :class:`LoopPolicy`;
:class:`LoopOptions` is their keyword spelling (plus ``tools``), and the drivers
derive their option sets from both.

The folds of the streams (:class:`~allm.fold.StepCollector`,
:class:`~allm.fold.ChatCollector`) live in :mod:`allm.fold`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import attrs

from .errors import AllmError, EngineError, ToolError
from .events import (
    AskUserRequested,
    ChatCompleted,
    Error,
    Event,
    StepCompleted,
    ToolExecutionCompleted,
    ToolExecutionStarted,
    ToolHalt,
    ToolResultEncoded,
)
from .fold import ChatCollector, Collector, StepCollector
from .ids import new_request_id
from .middleware._core import Chain, Stop, Verdict, open_chain
from .middleware._pipeline import Pipeline, as_pipeline
from .policy import Timeouts
from .tools import (
    ASK_USER_PLACEHOLDER,
    RESERVED_HALT_REASONS,
    AskUser,
    Halt,
    JsonResultEncoder,
    ResultEncoder,
    ToolContext,
    ToolJob,
    ToolOutcome,
    as_encoder,
    validate_arguments,
)
from .types import ChatResult, Message, Request, Response, Step, Thread, Tool, ToolCall, replaced, unchecked, user

if TYPE_CHECKING:
    from .engine import Engine

__all__ = [
    "Action",
    "CallModel",
    "ChatCollector",
    "Consult",
    "Finish",
    "Loop",
    "LoopOptions",
    "LoopPolicy",
    "Mode",
    "OnToolError",
    "RunTools",
    "StepCollector",
    "question_message",
]

Mode = Literal["auto", "manual"]
OnToolError = Literal["continue", "halt"] | Callable[[ToolCall, ToolError], Any]
"""``"continue"`` (the error is the call's result and the loop goes on), ``"halt"``
(the batch finishes, then the loop halts with ``tool_error``), or a function
``(tool_call, error) -> "continue" | "halt" | ("continue", replacement)`` deciding per
call: with a replacement, the model reads ``replacement`` (encoded like a handler's
result, not marked as an error) instead of the error. A function that raises or returns
anything else halts, its exception recorded in ``metadata["on_tool_error_exception"]``."""


def _check_mode(_i: Any, _a: Any, v: Any) -> None:
    if v not in ("auto", "manual"):
        raise ValueError(f"mode must be 'auto' or 'manual', not {v!r}")


def _check_max_turns(_i: Any, _a: Any, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"max_turns must be a positive int, not {v!r}")


def _check_on_tool_error(_i: Any, _a: Any, v: Any) -> None:
    if v not in ("continue", "halt") and not callable(v):
        raise ValueError(f"on_tool_error must be 'continue', 'halt' or a function, not {v!r}")


def _check_timeout(_i: Any, a: Any, v: Any) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v == float("inf")):
        raise ValueError(f"{a.name} must be a positive number of seconds or None, not {v!r}")


DEFAULT_FINALIZE_NUDGE = "Now provide your final structured response."
_FINALIZE_AFTER = frozenset({"completed", "max_turns", "halt_when"})


@attrs.frozen
class LoopPolicy:
    """How the loop runs tools and when it stops. Each field is also a keyword option of
    ``chat``, ``stream``, ``step``, ``stream_step``, their async twins and the session
    operations (see :class:`LoopOptions`).

    - ``mode``: ``"auto"`` runs tools and continues; ``"manual"`` stops at the first
      tool calls and hands them back (``halted_reason="manual_tool_calls"``).
    - ``max_turns``: most model calls in one chat (default 8; ignored by ``step``).
    - ``halt_when``: ``step -> bool``, checked after each turn that would continue;
      ``True`` halts with ``halt_when``. Its exceptions propagate.
    - ``on_tool_error``: see :data:`OnToolError`.
    - ``tool_timeout``: seconds each tool call may run (default 30; ``None``: no limit).
    - ``result_encoder``: turns results and errors into tool-message text (a
      :class:`~allm.tools.ResultEncoder` or a function ``value -> str``; JSON by default).
    - ``structured_finalize``: for providers that cannot combine tools with a JSON
      schema: the loop runs without the request's ``response_format``; if it halted
      ``completed``, ``max_turns`` or ``halt_when``, one more call with no tools and the
      format follows (after ``structured_finalize_nudge``, a user message; ``""`` skips
      it). It does not count against ``max_turns``. Needs a ``response_format``.
    - ``time_budget``: seconds the whole chat may take — model calls (their retries
      included), tools and the waits between (``None``: no limit). Each model call's total
      deadline and each tool's timeout are cut to what is left; when it is spent the chat
      ends with ``halted_reason="time_budget"`` (``metadata["time_budget"]`` is the
      budget), keeping the thread so far.
    - ``middleware``: a pipeline for this call (names, middleware or factories; see
      :mod:`allm.middleware`), run after the engine's.

    Raises ``ValueError`` for a value outside these.
    """

    mode: Mode = attrs.field(default="auto", validator=_check_mode)
    max_turns: int = attrs.field(default=8, validator=_check_max_turns)
    halt_when: Callable[[Step], bool] | None = attrs.field(default=None, eq=False)
    on_tool_error: OnToolError = attrs.field(default="continue", validator=_check_on_tool_error, eq=False)
    tool_timeout: float | None = attrs.field(default=30.0, validator=_check_timeout)
    result_encoder: ResultEncoder = attrs.field(factory=JsonResultEncoder, converter=as_encoder)
    structured_finalize: bool = False
    structured_finalize_nudge: str = DEFAULT_FINALIZE_NUDGE
    time_budget: float | None = attrs.field(default=None, validator=_check_timeout)
    middleware: Pipeline = attrs.field(factory=Pipeline, converter=as_pipeline)

    @property
    def encoder(self) -> ResultEncoder:
        """The :attr:`result_encoder` (its former name)."""
        return self.result_encoder

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> LoopPolicy:
        """The policy of the keyword ``options`` of a chat (other keys are ignored)."""
        return cls(**{k: options[k] for k in POLICY_FIELDS if k in options})


class LoopOptions(TypedDict, total=False):
    """The keyword spelling of :class:`LoopPolicy`'s fields, plus ``tools`` (tools for this
    call, merged over the engine's; same name: this one wins)."""

    tools: Sequence[Tool]
    mode: Mode
    max_turns: int
    halt_when: Callable[[Step], bool] | None
    on_tool_error: OnToolError
    tool_timeout: float | None
    result_encoder: ResultEncoder | Callable[[Any], str] | None
    structured_finalize: bool
    structured_finalize_nudge: str
    time_budget: float | None
    middleware: Sequence[Any] | Pipeline


#: The option names that configure :class:`LoopPolicy`.
POLICY_FIELDS = tuple(f.name for f in attrs.fields(LoopPolicy))
#: The names of :class:`LoopOptions`.
LOOP_OPTIONS = frozenset(LoopOptions.__annotations__)
assert set(POLICY_FIELDS) | {"tools"} == LOOP_OPTIONS, "LoopOptions must spell LoopPolicy's fields"


# ------------------------------------------------------------------------------ actions


@attrs.frozen
class CallModel:
    """Emit ``events``, then stream one model call for ``request`` and hand the folded
    :class:`~allm.types.Response` to :meth:`Loop.model_done`. ``turn`` counts from 0."""

    events: tuple[Event, ...]
    request: Request
    turn: int
    timeouts: Timeouts | None = None


@attrs.frozen
class RunTools:
    """Emit ``events``, then run ``jobs`` concurrently (each within ``timeout`` seconds)
    and hand each :class:`~allm.tools.ToolOutcome` to :meth:`Loop.tool_done` as it finishes."""

    events: tuple[Event, ...]
    jobs: tuple[ToolJob, ...]
    timeout: float | None


@attrs.frozen
class Consult:
    """Emit ``events``, then run the middleware's hooks at ``point`` (``"before_model"``:
    ``request`` is what the call would send; ``"after_model"``) and hand their
    :class:`~allm.middleware.Verdict` to :meth:`Loop.consulted`: ``perform()`` under the sync
    driver, ``await aperform()`` under the async one. Neither raises."""

    events: tuple[Event, ...]
    point: Literal["before_model", "after_model"]
    perform: Callable[[], Verdict]
    aperform: Callable[[], Awaitable[Verdict]]
    request: Request | None = None


@attrs.frozen
class Finish:
    """Emit ``events``; the loop is over and ``result`` is its outcome."""

    events: tuple[Event, ...]
    result: ChatResult | Step


Action = CallModel | RunTools | Consult | Finish

# A turn's values built by their fields, skipping attrs' checks: every field below is already in
# its checked form (a str content, tuples of checked values), and these are made on every turn.
_call_model = unchecked(CallModel)
_run_tools = unchecked(RunTools)
_tool_job = unchecked(ToolJob)
_tool_context = unchecked(ToolContext)
_execution_started = unchecked(ToolExecutionStarted)
_execution_completed = unchecked(ToolExecutionCompleted)
_result_encoded = unchecked(ToolResultEncoded)
_step_completed = unchecked(StepCompleted)
_step = unchecked(Step)
_message = unchecked(Message)


def question_message(question: str, tool_call_id: str | None, choices: Iterable[str] = ()) -> Message:
    """The assistant message that puts a handler's question to the user."""
    meta: dict[str, Any] = {"ask_user": True, "tool_call_id": tool_call_id}
    choices = list(choices)
    if choices:
        meta["choices"] = choices
    return Message("assistant", question, metadata=meta)


# ------------------------------------------------------------------------------ the machine


class Loop:
    """The state of one chat (or one step) and every decision about it.

    - ``thread``: the conversation so far (the model reads it on the first turn).
    - ``request``: the request template: model, sampling fields and the tools
      offered (already merged with the engine's); its messages are replaced by the
      thread on each turn.
    - ``policy``: a :class:`LoopPolicy`.
    - ``context``, ``session_id``, ``engine``: what handlers receive in their
      :class:`~allm.tools.ToolContext`.
    - ``single_step``: stop after one turn and finish with its
      :class:`~allm.types.Step` (``stream_step``) instead of a ChatResult.

    Call :meth:`next_action` and perform what it returns; see the module docstring.
    With a ``time_budget``, pass ``now`` (monotonic seconds) at construction and to
    :meth:`next_action` and :meth:`model_done`; ``timeouts`` are the model calls' own
    deadlines, which the budget cuts (the loop never reads a clock).
    During a :class:`CallModel`, hand each event of the call to :meth:`sink` (or give the
    whole response to :meth:`model_done`), and a call that raised before its first event
    to :meth:`model_failed`; after a :class:`Consult`, call :meth:`consulted`. Calling
    methods out of that order raises ``RuntimeError``. Raises ``ValueError`` at
    construction for ``structured_finalize`` without a ``response_format``, and what
    :func:`allm.middleware.open_chain` raises for the pipeline (``engine.middleware``, then
    ``policy.middleware``).
    """

    def __init__(
        self,
        thread: Thread,
        request: Request,
        policy: LoopPolicy,
        *,
        context: Mapping[str, Any] | None = None,
        session_id: str | None = None,
        engine: Engine | None = None,
        single_step: bool = False,
        timeouts: Timeouts | None = None,
        now: float | None = None,
    ) -> None:
        self.thread = thread
        self.request = request
        self.policy = policy
        self.context: Mapping[str, Any] = dict(context) if context else {}
        self.session_id = session_id
        self.engine = engine
        self.single_step = single_step
        self.tools: dict[str, Tool] = {}
        for t in request.tools:
            self.tools[t.name] = t  # later replaces earlier
        self.steps: list[Step] = []
        self.result: ChatResult | Step | None = None
        self.collector = Collector()
        self._timeouts = timeouts
        budget = policy.time_budget
        self._deadline = now + budget if budget is not None and now is not None else None
        self._emitted = False
        self._phase = "call"
        self._events: list[Event] = []
        # Structured finalize: the format is held back until the finalize call.
        self._final_format = None
        self._pass_1: ChatResult | None = None
        if policy.structured_finalize and not single_step:
            if request.response_format is None:
                raise ValueError("structured_finalize needs a request with a response_format")
            self._final_format = request.response_format
            self.request = attrs.evolve(request, response_format=None)
        # The turn in progress.
        self._response: Response | None = None
        self._calls: tuple[ToolCall, ...] = ()
        self._auto: list[ToolCall] = []
        self._manual: list[ToolCall] = []
        self._jobs: tuple[ToolJob, ...] = ()
        self._done: dict[str, Message] = {}
        self._halt: tuple[str, ToolCall, dict[str, Any]] | None = None
        self._ask: tuple[ToolCall, AskUser] | None = None
        # Middleware: one chain per run (None without a pipeline: nothing below runs).
        pipeline = policy.middleware if engine is None else engine.middleware + policy.middleware
        self._mw: Chain | None = open_chain(
            pipeline, session_id=session_id, context=self.context, engine=engine, model=request.model
        )
        self._ready: Request | None = None
        self._done_at: float | None = None

    # -- protocol

    def next_action(self, now: float | None = None) -> Action:
        """What to do now (see :data:`Action`); ``now`` for the ``time_budget``."""
        phase = self._phase
        if phase == "call":
            left = self._left(now)
            if left is not None and left <= 0 and self.steps and not self.single_step:
                self._out_of_time()
                return self.next_action(now)
            req = replaced(self.request, messages=self.thread.messages)  # a thread's messages are checked
            mw = self._mw
            if mw is not None and mw.consults_model:
                self._phase = "consult_model"
                events = self._flush()
                mw.run.turn = len(self.steps)
                return Consult(events, "before_model", partial(mw.before_model, req), partial(mw.abefore_model, req), req)
            return self._call_model(req, left)
        if phase == "model_ready":
            assert self._ready is not None
            req, self._ready = self._ready, None
            return self._call_model(req, self._left(now))
        if phase == "after_model":
            assert self._mw is not None and self._response is not None
            self._phase = "consult_response"
            calls = self._runnable(self._response)
            mw = self._mw
            return Consult(self._flush(), "after_model", partial(mw.after_model, self._response, calls), partial(mw.aafter_model, self._response, calls))
        if phase == "finalize":
            assert self._pass_1 is not None
            nudge = self.policy.structured_finalize_nudge
            self.thread = self._pass_1.thread.add(user(nudge)) if nudge else self._pass_1.thread
            self.tools = {}
            self.request = attrs.evolve(
                self.request, tools=(), tool_choice=None, response_format=self._final_format
            )
            self._phase = "call"
            return self.next_action(now)
        if phase == "tools":
            self._phase = "running"
            for j in self._jobs:
                c = j.call
                self._events.append(_execution_started(c.id, c.name, c.arguments))
            timeout = self.policy.tool_timeout
            left = self._left(now)
            if left is not None:
                timeout = max(left, 1e-3) if timeout is None else max(min(timeout, left), 1e-3)
            return _run_tools(self._flush(), self._jobs, timeout)
        if phase == "running":
            if len(self._done) != len(self._jobs):  # tool_done() takes only this batch's calls, once each
                missing = [j.call.id for j in self._jobs if j.call.id not in self._done]
                raise RuntimeError(f"next_action() before every tool call finished (waiting for {missing})")
            self._end_tools()
            return self.next_action(now)
        if phase == "finished":
            assert self.result is not None
            self._phase = "over"
            return Finish(self._flush(), self.result)
        raise RuntimeError(f"next_action() is not expected now (phase {phase!r})")

    def model_failed(self, error: AllmError) -> Error:
        """The model call raised ``error`` before its first event (after its retries).

        Re-raises it when the chat has emitted nothing yet (a chat fails like
        ``stream_generate`` before its first event); otherwise returns the ``Error``
        event to emit, already folded into :attr:`collector`.
        """
        if not self._emitted and not self.steps:
            raise error
        ev = Error(error)
        self.collector.apply(ev)
        if self._mw is not None:
            self._mw.notify((ev,))
        return ev

    def sink(self) -> Callable[[Event], None]:
        """The function to hand each event of the pending model call to: ``collector.apply``
        itself, or with ``on_event`` middleware one that also hands it to them."""
        if self._mw is None:
            return self.collector.apply
        return self._mw.sink(self.collector.apply)

    def consulted(self, verdict: Verdict) -> None:
        """The middleware's ``verdict`` on the :class:`Consult` that :meth:`next_action` returned.

        Before a model call: its ``request`` is sent, or its ``stop`` ends the run with no call.
        After one: its ``stop`` ends the run (the response is kept in a last step but its message
        is not added to the thread, and its tool calls do not run), else its ``refusals`` become
        those calls' tool errors. A hook's ``error`` ends the run with ``halted_reason="error"``
        (re-raised when nothing was emitted yet, like :meth:`model_failed`).
        """
        phase = self._phase
        if phase not in ("consult_model", "consult_response"):
            raise RuntimeError("consulted() without a pending Consult")
        response = self._response if phase == "consult_response" else None
        if verdict.error is not None:
            self._middleware_failed(verdict.by or "", verdict.error, response)
        elif verdict.stop is not None:
            self._stopped(verdict.by or "", verdict.stop, response)
        elif response is None:
            self._ready = verdict.request
            self._phase = "model_ready"
        else:
            self._turn(response, self._done_at, verdict.refusals)

    def model_done(self, response: Response | None = None, now: float | None = None) -> None:
        """The model call of :class:`CallModel` ended with ``response`` (possibly an error);
        by default the fold of the events handed to :attr:`collector`."""
        if self._phase != "model":
            raise RuntimeError("model_done() without a pending CallModel")
        self._emitted = True
        if response is None:
            response = self.collector.response()
        self._response = response
        mw = self._mw
        if mw is not None:
            mw.run.usage = mw.run.usage + response.usage
            if mw.consults_response:
                self._done_at = now
                self._phase = "after_model"
                return
        self._turn(response, now)

    def _turn(self, response: Response, now: float | None, refusals: Mapping[str, tuple[str, Any]] | None = None) -> None:
        """The decisions of a finished model call: end the run, or the tool jobs to run."""
        left = self._left(now)
        if response.finish_reason == "error" and left is not None and left <= 1e-3 and not self.single_step:
            self._out_of_time(response)
            return
        self._done = {}
        self._halt = None
        self._ask = None
        self._auto = []
        self._manual = []
        turn = len(self.steps)
        if response.finish_reason == "error":
            err = response.metadata.get("error")
            self._end_step("error", self.thread, metadata={"error": err} if err is not None else {})
            return
        calls = response.tool_calls
        self._calls = calls
        if not calls:
            self._end_step("completed", self.thread.add(response.message))
            return
        if self.policy.mode == "manual":
            self._end_step(
                "manual_tool_calls",
                self.thread.add(response.message),
                metadata={"manual_turn_index": turn},
                pending=calls,
            )
            return
        tools = self.tools
        for c in calls:
            if c.name in tools:
                continue
            offered = ", ".join(sorted(self.tools)) or "none"
            err = EngineError(
                f"the model called the tool {c.name!r}, which was not offered (offered: {offered})",
                reason="unknown_tool",
                metadata={"tool_name": c.name, "tool_call_id": c.id},
            )
            self._events.append(Error(err))
            self._end_step("error", self.thread, metadata={"error": err})
            return
        self.thread = self.thread.add(response.message)
        for c in calls:
            (self._manual if self.tools[c.name].manual else self._auto).append(c)
        if not self._auto:
            self._end_step("manual_tool_calls", self.thread, metadata={"manual_turn_index": turn}, pending=self._manual)
            return
        jobs = []
        for c in self._auto:
            t = self.tools[c.name]
            ctx = _tool_context(c, self.context, self.session_id, response.request_id, self.engine)
            err2: ToolError | None
            refused = refusals.get(c.id) if refusals else None
            if refused is not None:
                by, refusal = refused
                err2 = ToolError(
                    f"refused by {by}: {refusal.message}" if refusal.message else f"refused by {by}",
                    reason="refused",
                    metadata={**refusal.metadata, "tool_name": c.name, "tool_call_id": c.id, "middleware": by},
                )
            elif t.handler is None:
                err2 = ToolError(
                    f"the tool {c.name} has no handler", reason="not_found", metadata={"tool_name": c.name}
                )
            else:
                err2 = validate_arguments(t, c)
            jobs.append(_tool_job(c, t, ctx, err2))
        self._jobs = tuple(jobs)
        self._phase = "tools"

    def tool_done(self, outcome: ToolOutcome) -> list[Event]:
        """A tool call of :class:`RunTools` finished; returns the events to emit for it:
        ``ToolExecutionCompleted`` then ``ToolResultEncoded`` / ``AskUserRequested`` / ``ToolHalt``."""
        if self._phase != "running":
            raise RuntimeError("tool_done() without a pending RunTools")
        call = outcome.call
        jobs = self._jobs
        ours = jobs[0].call.id == call.id if len(jobs) == 1 else any(j.call.id == call.id for j in jobs)
        if call.id in self._done or not ours:
            raise RuntimeError(f"tool_done() for an unexpected call {call.id!r}")
        out: list[Event] = [_execution_completed(call.id, call.name, outcome.value, outcome.error)]
        try:
            error = outcome.error
            value = outcome.value
            if error is None and isinstance(value, AskUser):
                self._done[call.id] = self._tool_message(call, ASK_USER_PLACEHOLDER)
                if self._halt is None:
                    self._halt = ("ask_user", call, {})
                    self._ask = (call, value)
                out.append(AskUserRequested(call.id, call.name, value.question, value.choices, value.options))
                return out
            if error is None and isinstance(value, Halt):
                reason = value.reason
                if not isinstance(reason, str) or not reason or reason in RESERVED_HALT_REASONS:
                    error = ToolError(
                        f"{call.name} returned Halt({reason!r}); that reason is reserved for the loop "
                        f"({', '.join(sorted(RESERVED_HALT_REASONS))})",
                        reason="invalid_return",
                        metadata={"tool_name": call.name, "tool_call_id": call.id},
                    )
                else:
                    content, enc_err = self._encode(call, value.result)
                    if enc_err is not None:
                        content = self._encode_error(call, enc_err)
                    self._done[call.id] = self._tool_message(call, content, is_error=enc_err is not None)
                    if self._halt is None:
                        self._halt = (reason, call, {"halt_tool_call_id": call.id, "halt_result": value.result})
                    out.append(ToolHalt(call.id, reason, value.result, content))
                    return out
            if error is None:
                content, error = self._encode(call, value)
                if error is None:
                    self._done[call.id] = self._tool_message(call, content)
                    out.append(_result_encoded(call.id, content, False))
                    return out
            # A tool error: apply on_tool_error, then encode the error (or the replacement) for the model.
            decision, meta = self._decide(call, error)
            if decision == "replace":
                content, enc_err = self._encode(call, meta.pop("replacement"))
                if enc_err is None:
                    self._done[call.id] = self._tool_message(call, content)
                    out.append(_result_encoded(call.id, content, False))
                    return out
                error, decision = enc_err, "halt"
            content = self._encode_error(call, error)
            self._done[call.id] = self._tool_message(call, content, is_error=True)
            out.append(_result_encoded(call.id, content, True))
            if decision == "halt" and self._halt is None:
                self._halt = ("tool_error", call, {"halt_tool_call_id": call.id, "error": error, **meta})
            return out
        finally:
            if self._mw is not None:
                self._mw.tool_done(outcome, out)

    # -- helpers

    def _call_model(self, req: Request, left: float | None) -> CallModel:
        self._phase = "model"
        self.collector = Collector(new_request_id())
        timeouts = self._timeouts
        if left is not None:
            base = timeouts or Timeouts()
            cut = max(left, 1e-3)
            timeouts = attrs.evolve(base, total=cut if base.total is None else min(base.total, cut))
        events = self._flush()
        if self._mw is not None:
            self._mw.run.turn = len(self.steps)
        return _call_model(events, req, len(self.steps), timeouts)

    def _runnable(self, response: Response) -> tuple[ToolCall, ...]:
        """The tool calls of ``response`` that the loop would run (those ``before_tool`` sees)."""
        if response.finish_reason == "error" or self.policy.mode == "manual":
            return ()
        calls = response.tool_calls
        if any(c.name not in self.tools for c in calls):
            return ()
        return tuple(c for c in calls if not self.tools[c.name].manual)

    def _stopped(self, by: str, stop: Stop, response: Response | None) -> None:
        """End the run on the middleware ``by``'s ``stop``."""
        self._end_run(stop.reason, {"stopped_by": {"middleware": by, "message": stop.message, **stop.metadata}}, response)

    def _middleware_failed(self, by: str, exc: BaseException, response: Response | None) -> None:
        """A hook of the middleware ``by`` raised ``exc``: raise when nothing was emitted yet,
        else end the run ``halted_reason="error"``."""
        if isinstance(exc, AllmError):
            err = exc
        else:
            err = EngineError(
                f"the middleware {by!r} failed: {type(exc).__name__}: {exc}",
                reason="middleware_failed",
                metadata={"middleware": by, "exception_type": type(exc).__name__},
            )
            err.__cause__ = exc
        if not self._emitted and not self.steps:
            raise err
        self._events.append(Error(err))
        self._end_run("error", {"error": err, "middleware": by}, response)

    def _end_run(self, halted: str, meta: dict[str, Any], response: Response | None) -> None:
        """End the run at a middleware point: before a model call (``response`` None: no call
        was made, the thread is as it was) or after one (a last step keeps ``response``, but its
        message is not added to the thread and its tool calls do not run). In structured
        finalize's second pass, the thread of the first."""
        thread = self._pass_1.thread if self._pass_1 is not None else self.thread
        if response is not None or self.single_step:
            shown = response if response is not None else Response(Message("assistant", ""))
            step = Step(shown, thread, (), self.policy.mode, True, halted, dict(meta))
            self.steps.append(step)
            self._events.append(StepCompleted(step))
            if self.single_step:
                self._finish(step)
                return
        last = self.steps[-1].response if self.steps else None
        result = ChatResult(thread, last, tuple(self.steps), halted, metadata=meta)
        self._events.append(ChatCompleted(result))
        self._finish(result)

    def _left(self, now: float | None) -> float | None:
        """Seconds of the ``time_budget`` left at ``now`` (``None``: no budget)."""
        if self._deadline is None or now is None:
            return None
        return self._deadline - now

    def _out_of_time(self, response: Response | None = None) -> None:
        """End the chat with ``time_budget``: after the last completed step, or on the
        model call the budget cut short (``response``, kept as a step)."""
        meta: dict[str, Any] = {"time_budget": self.policy.time_budget}
        if response is not None:
            err = response.metadata.get("error")
            if err is not None:
                meta["error"] = err
            step = Step(response, self.thread, (), self.policy.mode, True, "time_budget", dict(meta))
            self.steps.append(step)
            self._events.append(StepCompleted(step))
        last = self.steps[-1]
        result = ChatResult(self.thread, last.response, tuple(self.steps), "time_budget", metadata=meta)
        self._events.append(ChatCompleted(result))
        self._finish(result)

    def _flush(self) -> tuple[Event, ...]:
        out = tuple(self._events)
        if out:
            self._emitted = True
            if self._mw is not None:
                self._mw.notify(out)
        self._events.clear()
        return out

    @staticmethod
    def _tool_message(call: ToolCall, content: str, *, is_error: bool = False) -> Message:
        # As Message("tool", ...) stores it: a str subclass's text as a plain str.
        return _message("tool", content if type(content) is str else str(content), (), call.id, call.name, is_error, {})

    def _encode(self, call: ToolCall, value: Any) -> tuple[str, ToolError | None]:
        try:
            content = self.policy.result_encoder.encode_result(value, call)
            if not isinstance(content, str):
                raise TypeError(f"the encoder returned {type(content).__name__}, not str")
        except Exception as exc:
            err = ToolError(
                f"the result of {call.name} could not be encoded: {exc}",
                reason="encoding_failed",
                metadata={"tool_name": call.name, "tool_call_id": call.id},
            )
            err.__cause__ = exc
            return "", err
        return content, None

    def _encode_error(self, call: ToolCall, error: ToolError) -> str:
        try:
            content = self.policy.result_encoder.encode_error(error, call)
            if isinstance(content, str):
                return content
        except Exception:
            pass
        return JsonResultEncoder().encode_error(error, call)

    def _decide(self, call: ToolCall, error: ToolError) -> tuple[str, dict[str, Any]]:
        policy = self.policy.on_tool_error
        if policy == "continue" or policy == "halt":
            return str(policy), {}
        assert callable(policy)
        try:
            decision = policy(call, error)
        except Exception as exc:
            return "halt", {"on_tool_error_exception": f"{type(exc).__name__}: {exc}"}
        if decision == "continue" or decision == "halt":
            return decision, {}
        if isinstance(decision, tuple) and len(decision) == 2 and decision[0] == "continue":
            return "replace", {"replacement": decision[1]}
        return "halt", {
            "on_tool_error_exception": (
                f"on_tool_error returned {decision!r}; expected 'continue', 'halt' or ('continue', replacement)"
            )
        }

    def _end_tools(self) -> None:
        results = tuple(self._done[c.id] for c in self._auto)
        thread = self.thread.extend(results)
        metadata: dict[str, Any] = {}
        halted: str | None = None
        if self._halt is not None:
            halted, _call, metadata = self._halt[0], self._halt[1], dict(self._halt[2])
        if self._ask is not None:
            ask_call, ask = self._ask
            metadata["pending_question"] = ask.question
            metadata["pending_tool_call_id"] = ask_call.id
            metadata["ask_user"] = {"choices": list(ask.choices), "options": dict(ask.options)}
            if not self._manual:
                thread = thread.add(question_message(ask.question, ask_call.id, ask.choices))
        if self._manual:
            metadata["manual_turn_index"] = len(self.steps)
            if halted is None:
                halted = "manual_tool_calls"
        self._end_step(halted, thread, metadata=metadata, pending=self._manual, tool_results=results)

    def _end_step(
        self,
        halted: str | None,
        thread: Thread,
        *,
        metadata: Mapping[str, Any] | None = None,
        pending: Iterable[ToolCall] = (),
        tool_results: tuple[Message, ...] = (),
    ) -> None:
        assert self._response is not None
        step = _step(
            self._response,
            thread,
            tool_results,
            self.policy.mode,
            halted is not None,
            halted,
            dict(metadata) if metadata else {},
            tuple(pending),
        )
        self.thread = thread
        self.steps.append(step)
        self._events.append(_step_completed(step))
        if self.single_step:
            self._finish(step)
            return
        extra: dict[str, Any] = {}
        if halted is None:
            index = len(self.steps) - 1
            hw = self.policy.halt_when
            if hw is not None and hw(step):
                halted = "halt_when"
                extra = {"halt_when_step_index": index}
            elif index + 1 >= self.policy.max_turns:
                halted = "max_turns"
                extra = {"max_turns": self.policy.max_turns}
            else:
                self._phase = "call"
                return
        meta = {**step.metadata, **extra}
        result = ChatResult(
            thread,
            step.response,
            tuple(self.steps),
            halted,
            meta.get("pending_question"),
            meta.get("pending_tool_call_id"),
            meta,
            step.pending_tool_calls,
        )
        if self.policy.structured_finalize:
            final = self._finalized(result, step)
            if final is None:
                return
            result = final
        self._events.append(ChatCompleted(result))
        self._finish(result)

    def _finalized(self, result: ChatResult, step: Step) -> ChatResult | None:
        """Structured finalize: the first pass's end starts the finalize call (``None``), or
        the chat's result with both passes' steps and ``metadata["structured_finalize"]``."""
        first = self._pass_1
        if first is None:
            self._pass_1 = first = result
            if result.halted_reason in _FINALIZE_AFTER:
                self._phase = "finalize"
                return None
        meta = {**first.metadata, "structured_finalize": {"pass_1_halted": first.halted_reason}}
        if result is first:
            return attrs.evolve(first, metadata=meta)
        return ChatResult(
            step.thread,
            step.response,
            tuple(self.steps),
            step.halted_reason or "completed",
            metadata={**meta, **step.metadata},
        )

    def _finish(self, result: ChatResult | Step) -> None:
        self.result = result
        self._phase = "finished"
