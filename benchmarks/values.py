"""Figures 5 and 6: storing a long thread, and a tool loop on the Fake.

Each function returns ``seconds per operation`` measured over ``reps`` repetitions
and checks its result first (a round trip must give back an equal value; a loop
must end with the expected answer).
"""

from __future__ import annotations

import gc
import pickle
import time
from collections.abc import Callable
from typing import Any

import orjson

# ------------------------------------------------------------------------------ figure 5: a 1,000-message thread

_CYCLE = 4  # user, assistant with a tool call, tool result, assistant answer


def thread_dicts(n: int) -> list[dict[str, Any]]:
    """The thread as plain dicts carrying the same information as the allm values."""
    out: list[dict[str, Any]] = [{"role": "system", "content": "You are a careful assistant."}]
    while len(out) < n:
        k = len(out) // _CYCLE
        call_id = f"call_{k:06d}"
        args = {"city": f"City {k}", "unit": "c", "days": k % 7}
        step = [
            {"role": "user", "content": f"What is the weather in City {k} for the next {k % 7} days?"},
            {"role": "assistant", "content": "",
             "tool_calls": [{"id": call_id, "name": "get_weather", "arguments": args,
                             "raw_arguments": orjson.dumps(args).decode()}]},
            {"role": "tool", "content": orjson.dumps({"temp_c": 10 + k % 15, "sky": "clear"}).decode(),
             "tool_call_id": call_id},
            {"role": "assistant", "content": f"It will be {10 + k % 15} degrees and clear in City {k}."},
        ]
        out.extend(step[: n - len(out)])
    return out


def thread_value(n: int) -> Any:
    """The same thread as an :class:`allm.Thread`."""
    import allm

    msgs = []
    for d in thread_dicts(n):
        calls = [allm.ToolCall(c["id"], c["name"], c["arguments"], c["raw_arguments"]) for c in d.get("tool_calls", ())]
        msgs.append(allm.Message(d["role"], d["content"], tool_calls=calls, tool_call_id=d.get("tool_call_id")))
    return allm.Thread(msgs)


def _per_op(fn: Callable[[], Any], reps: int) -> float:
    gc.collect()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def codec_allm(n: int, reps: int) -> dict[str, float]:
    from allm import codec

    thread = thread_value(n)
    if codec.loads(codec.dumps(thread)) != thread:
        raise RuntimeError("allm.codec did not round-trip the thread")
    if pickle.loads(pickle.dumps(thread)) != thread:
        raise RuntimeError("pickle did not round-trip the thread")
    return {
        "json": _per_op(lambda: codec.loads(codec.dumps(thread)), reps),
        "pickle": _per_op(lambda: pickle.loads(pickle.dumps(thread, pickle.HIGHEST_PROTOCOL)), reps),
    }


def codec_floor(n: int, reps: int) -> dict[str, float]:
    thread = thread_dicts(n)
    if orjson.loads(orjson.dumps(thread)) != thread or pickle.loads(pickle.dumps(thread)) != thread:
        raise RuntimeError("the plain dicts did not round-trip")
    return {
        "json": _per_op(lambda: orjson.loads(orjson.dumps(thread)), reps),
        "pickle": _per_op(lambda: pickle.loads(pickle.dumps(thread, pickle.HIGHEST_PROTOCOL)), reps),
    }


# ------------------------------------------------------------------------------ figure 6: a 10-turn tool loop

TURNS = 10


def _add(args: dict[str, Any]) -> int:
    return int(args["a"]) + int(args["b"])


def _scripts() -> list[list[Any]]:
    from allm.testing import finish, tool_call

    calls = [[tool_call("add", {"a": i, "b": 1}, id=f"call_{i}"), finish("tool_calls")] for i in range(TURNS - 1)]
    return [*calls, [f"The total is {TURNS - 1}."]]


def has_chat() -> bool:
    import allm

    return hasattr(allm, "chat")


async def _aadd(args: dict[str, Any]) -> int:
    return _add(args)


#: The tool loop's variants (figure 6): (async driver, async handler, tool_timeout).
LOOP_VARIANTS: dict[str, tuple[bool, bool, float | None]] = {
    "sync": (False, False, 30.0),
    "sync-untimed": (False, False, None),
    "async": (True, True, 30.0),
    "async-sync-handler": (True, False, 30.0),
}


def loop_allm_chat(reps: int, variant: str = "sync") -> float:
    """Seconds per turn of ``allm.chat`` (or ``allm.achat``) driving ``TURNS`` model calls on the
    Fake, in one of :data:`LOOP_VARIANTS`: the driver, the tool handler (``def`` or ``async def``,
    both doing nothing but an addition) and ``tool_timeout`` (30 s is the default)."""
    import asyncio

    import allm
    from allm.providers import Fake

    asynchronous, async_handler, tool_timeout = LOOP_VARIANTS[variant]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}
    tool = allm.Tool("add", "Add two integers.", schema, handler=_aadd if async_handler else _add)
    engines = [allm.Engine(adapter=Fake(scripts=_scripts()), model="fake", tools=(tool,)) for _ in range(reps + 1)]

    async def arun(es: list[Any]) -> Any:
        r = None
        for e in es:
            r = await allm.achat(e, "Add them up.", max_turns=TURNS, tool_timeout=tool_timeout)
        return r

    def run(es: list[Any]) -> Any:
        if asynchronous:  # a loop of its own, leaving the worker's current loop as it is
            loop = asyncio.new_event_loop()
            try:
                return loop.run_until_complete(arun(es))
            finally:
                loop.close()
        r = None
        for e in es:
            r = allm.chat(e, "Add them up.", max_turns=TURNS, tool_timeout=tool_timeout)
        return r

    result = run([engines.pop()])
    final = result.final_response
    if final is None or final.output_text != f"The total is {TURNS - 1}." or len(result.steps) != TURNS:
        raise RuntimeError(f"allm.chat ended unexpectedly: {result.halted_reason}")
    gc.collect()
    t = time.perf_counter()
    run(engines)
    return (time.perf_counter() - t) / (reps * TURNS)


def loop_allm_generate(reps: int) -> float:
    """Stand-in until ``allm.chat`` lands: ``TURNS`` ``allm.generate`` calls on the Fake, the
    tool run and its result appended by hand. Seconds per turn."""
    import allm
    from allm.providers import Fake

    def run(engine: Any) -> str:
        thread = allm.Thread([allm.user("Add them up.")])
        for _ in range(TURNS):
            resp = allm.generate(engine, thread)
            thread = thread.add(resp.message)
            if not resp.tool_calls:
                return str(resp.output_text)
            for call in resp.tool_calls:
                thread = thread.add(allm.tool_result(call.id, orjson.dumps(_add(dict(call.arguments))).decode()))
        raise RuntimeError("the loop did not finish")

    engines = [allm.Engine(adapter=Fake(scripts=_scripts()), model="fake") for _ in range(reps + 1)]
    if run(engines.pop()) != f"The total is {TURNS - 1}.":
        raise RuntimeError("the generate sequence ended unexpectedly")
    gc.collect()
    t = time.perf_counter()
    for e in engines:
        run(e)
    return (time.perf_counter() - t) / (reps * TURNS)


def loop_floor(reps: int, handoff: str | None = None) -> float:
    """The least a loop does per turn: take the scripted reply (a dict), append it, run the
    handler, append the JSON result. Seconds per turn.

    ``handoff`` runs the handler on another thread, as any loop must that can give up on a
    ``def`` handler at its timeout (a thread cannot be stopped from outside): ``"thread"``
    submits it to a ``ThreadPoolExecutor`` and waits for the result with a timeout;
    ``"asyncio"`` awaits ``loop.run_in_executor`` under ``asyncio.wait_for`` in an event loop."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    replies: list[dict[str, Any]] = [
        {"role": "assistant", "content": "", "tool_calls": [{"id": f"call_{i}", "name": "add", "arguments": {"a": i, "b": 1}}]}
        for i in range(TURNS - 1)
    ]
    replies.append({"role": "assistant", "content": f"The total is {TURNS - 1}."})
    tools = {"add": _add}
    pool = ThreadPoolExecutor(4) if handoff is not None else None

    def run() -> str:
        thread: list[dict[str, Any]] = [{"role": "user", "content": "Add them up."}]
        for turn in range(TURNS):
            msg = dict(replies[turn])
            thread.append(msg)
            calls = msg.get("tool_calls")
            if not calls:
                return str(msg["content"])
            for c in calls:
                if pool is None:
                    out = tools[c["name"]](c["arguments"])
                else:
                    out = pool.submit(tools[c["name"]], c["arguments"]).result(timeout=30.0)
                thread.append({"role": "tool", "tool_call_id": c["id"], "content": orjson.dumps(out).decode()})
        raise RuntimeError("the loop did not finish")

    async def arun() -> str:  # the same loop, awaiting each handler's thread
        loop = asyncio.get_running_loop()
        thread: list[dict[str, Any]] = [{"role": "user", "content": "Add them up."}]
        for msg in map(dict, replies):
            thread.append(msg)
            if not msg.get("tool_calls"):
                return str(msg["content"])
            for c in msg["tool_calls"]:
                out = await asyncio.wait_for(loop.run_in_executor(pool, tools[c["name"]], c["arguments"]), 30.0)
                thread.append({"role": "tool", "tool_call_id": c["id"], "content": orjson.dumps(out).decode()})
        raise RuntimeError("the loop did not finish")

    ev = asyncio.new_event_loop() if handoff == "asyncio" else None
    try:
        if handoff not in (None, "thread", "asyncio"):
            raise ValueError(f"unknown handoff {handoff!r}")
        once: Callable[[], str] = run if ev is None else (lambda: ev.run_until_complete(arun()))
        if once() != f"The total is {TURNS - 1}.":
            raise RuntimeError("the floor loop ended unexpectedly")
        return _per_op(once, reps) / TURNS
    finally:
        if ev is not None:
            ev.close()
        if pool is not None:
            pool.shutdown()


# ------------------------------------------------------------------------------ figure 7: the OpenTelemetry SDK alone


def otel_sdk_call(start: dict[str, Any], end: dict[str, Any]) -> Callable[[], None]:
    """What the OpenTelemetry SDK itself does for one model call, with no allm code: one span
    started with the call's ``start`` attributes, given its ``end`` attributes and ended, and the
    call's four histogram records (duration, time to first chunk, input and output tokens), on a
    tracer provider and meter provider set up as figure 7's (see ``AllmOtel``)."""
    from collections.abc import Sequence

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.trace import SpanKind

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(Drop()))
    tracer = tp.get_tracer("floor")
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("floor")
    duration, ttfc, tokens = (meter.create_histogram(name) for name in ("d", "t", "u"))
    keys = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "server.address", "server.port")
    metric = {k: start[k] for k in keys if k in start}
    metric["gen_ai.response.model"] = end["gen_ai.response.model"]
    inp, out = {**metric, "gen_ai.token.type": "input"}, {**metric, "gen_ai.token.type": "output"}
    n_in, n_out = end["gen_ai.usage.input_tokens"], end["gen_ai.usage.output_tokens"]
    name = f"chat {start['gen_ai.request.model']}"

    def one() -> None:
        span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=start)
        span.set_attributes(end)
        span.end()
        duration.record(0.01, metric)
        ttfc.record(0.001, metric)
        tokens.record(n_in, inp)
        tokens.record(n_out, out)

    return one


def otel_sdk_floor(n: int) -> tuple[float, float]:
    """Seconds per call of :func:`otel_sdk_call` for a streamed OpenAI call:
    ``(wall seconds, CPU seconds)``."""
    one = otel_sdk_call(
        {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
            "server.address": "127.0.0.1", "server.port": 8080, "allm.request_id": "x" * 22, "gen_ai.request.stream": True,
            "gen_ai.request.max_tokens": 64,
        },
        {
            "gen_ai.response.id": "chatcmpl-1", "gen_ai.response.model": "gpt-4o-mini", "gen_ai.response.finish_reasons": ("stop",),
            "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 60, "gen_ai.response.time_to_first_chunk": 0.001,
        },
    )
    for _ in range(50):
        one()
    gc.collect()
    cpu, t = time.process_time(), time.perf_counter()
    for _ in range(n):
        one()
    return (time.perf_counter() - t) / n, (time.process_time() - cpu) / n
