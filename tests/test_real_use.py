"""Defects a user would hit in production, each with the test named for it: forked workers,
``asyncio.run`` in a loop, handlers that raise ``TimeoutError``, structured finalize under
failure and in sessions, duplicate tool names, handlers with defaulted parameters."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import orjson
import pytest

import allm
from allm import events as E
from allm.providers import OpenAICompatible
from allm.testing import error, fake_engine, text, tool_call
from tests.loopback import LoopbackServer, Req, Writer, chat_chunks, serve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def _echo(req: Req, w: Writer) -> None:
    """A Chat Completions server that answers each call with its last user message."""
    said = orjson.loads(req.body)["messages"][-1]["content"]
    await w.start_stream()
    for c in chat_chunks([said[: len(said) // 2], said[len(said) // 2 :]]):
        await w.chunk(c)
        await asyncio.sleep(0.001)
    await w.end_stream()


@pytest.fixture
def echo() -> Iterator[LoopbackServer]:
    with serve(_echo) as s:
        yield s


# ------------------------------------------------------------------------------ 1. fork


def _child_calls(args: tuple[str, int]) -> list[tuple[str, str]]:
    url, n = args
    engine = allm.Engine(adapter=OpenAICompatible(url), model="m")

    def one(i: int) -> tuple[str, str]:
        prompt = f"child {n} pid {os.getpid()} call {i}"
        try:
            return prompt, allm.generate(engine, prompt, retry=allm.RetryPolicy(max_attempts=1)).output_text
        except allm.AllmError as exc:
            return prompt, f"failed: {exc}"

    with ThreadPoolExecutor(3) as pool:
        return list(pool.map(one, range(6)))


def test_fork_children_never_share_a_pooled_connection(echo: LoopbackServer) -> None:
    engine = allm.Engine(adapter=OpenAICompatible(echo.url), model="m")
    # The parent holds kept-alive connections in its pool when it forks.
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda i: allm.generate(engine, f"parent {i}").output_text, range(4))) == [f"parent {i}" for i in range(4)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(6) as workers:
        results = workers.map(_child_calls, [(echo.url, n) for n in range(12)], chunksize=1)
    answers = [pair for child in results for pair in child]
    assert len(answers) == 72
    wrong = [(prompt, got) for prompt, got in answers if prompt != got]
    assert wrong == []
    # The parent's own pool still works after its children used theirs.
    assert allm.generate(engine, "parent again").output_text == "parent again"


# ------------------------------------------------------------------------------ 2. asyncio.run leaks

_LEAK_SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, os, resource, sys
    import allm
    from allm.providers import OpenAICompatible

    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    engine = allm.Engine(adapter=OpenAICompatible(sys.argv[1]), model="m")

    async def call(i):
        return (await allm.agenerate(engine, f"run {i}")).output_text

    for i in range(200):
        assert asyncio.run(call(i)) == f"run {i}"
    gc.collect()
    loops = sum(isinstance(o, asyncio.AbstractEventLoop) for o in gc.get_objects())
    print(len(os.listdir("/proc/self/fd")), loops)
    """
)


def test_asyncio_run_in_a_loop_leaks_no_client_socket_or_loop(echo: LoopbackServer) -> None:
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", _LEAK_SCRIPT, echo.url], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    fds, loops = map(int, out.stdout.split())
    assert fds < 20 and loops <= 1


def test_async_tool_handlers_under_the_sync_driver_reuse_their_loop(echo: LoopbackServer) -> None:
    inner = allm.Engine(adapter=OpenAICompatible(echo.url), model="m")

    async def ask(args: dict[str, Any]) -> str:
        return (await allm.agenerate(inner, args["q"])).output_text

    tool = allm.tool("ask", "Ask the inner model", {"type": "object", "properties": {"q": {"type": "string"}}}, handler=ask)
    before = threading.active_count()
    for i in range(30):
        eng = fake_engine([tool_call("ask", {"q": f"q{i}"})], ["done"], tools=[tool])
        r = allm.chat(eng, "go")
        assert r.thread.messages[2].text == f"q{i}"
    assert threading.active_count() - before <= 2  # a reused worker, not a thread (and loop) per call
    assert echo.wait_for(lambda: echo.open_connections <= 2)


# ------------------------------------------------------------------------------ 3. TimeoutError from a handler


def _times_out(args: dict[str, Any]) -> None:
    raise TimeoutError("the socket timed out")


async def _atimes_out(args: dict[str, Any]) -> None:
    raise TimeoutError("the upstream timed out")


@pytest.mark.parametrize("handler", [_times_out, _atimes_out], ids=["sync", "async"])
@pytest.mark.parametrize("tool_timeout", [None, 30.0])
def test_handler_raising_timeout_error_is_handler_raised_at_once_in_chat(handler: Any, tool_timeout: float | None) -> None:
    tool = allm.tool("slow", handler=handler)
    eng = fake_engine([tool_call("slow", {}, id="c1")], ["ok"], tools=[tool])
    box: dict[str, Any] = {}
    t0 = time.monotonic()
    th = threading.Thread(target=lambda: box.setdefault("events", list(allm.stream(eng, "go", tool_timeout=tool_timeout))), daemon=True)
    th.start()
    th.join(20)
    assert not th.is_alive(), "chat hung"
    assert time.monotonic() - t0 < 10
    events = box["events"]
    completed = next(e for e in events if type(e) is E.ToolExecutionCompleted)
    assert completed.error is not None and completed.error.reason == "handler_raised"
    result = next(e for e in events if type(e) is E.ChatCompleted).result
    assert result.halted_reason == "completed"
    tool_message = result.thread.messages[2]
    assert tool_message.is_error and "timed out" in tool_message.text and "did not finish" not in tool_message.text


@pytest.mark.parametrize("handler", [_times_out, _atimes_out], ids=["sync", "async"])
@pytest.mark.parametrize("tool_timeout", [None, 30.0])
async def test_handler_raising_timeout_error_is_handler_raised_at_once_in_achat(handler: Any, tool_timeout: float | None) -> None:
    tool = allm.tool("slow", handler=handler)
    eng = fake_engine([tool_call("slow", {}, id="c1")], ["ok"], tools=[tool])
    events = []
    async with asyncio.timeout(10):
        async for ev in allm.astream(eng, "go", tool_timeout=tool_timeout):
            events.append(ev)
    completed = next(e for e in events if type(e) is E.ToolExecutionCompleted)
    assert completed.error is not None and completed.error.reason == "handler_raised"
    assert next(e for e in events if type(e) is E.ChatCompleted).result.halted_reason == "completed"


def test_a_worker_that_dies_never_leaves_the_runner_waiting() -> None:
    class Dies(BaseException):
        """Not an Exception: escapes ``except Exception`` in a handler wrapper."""

    def die(args: dict[str, Any]) -> None:
        raise Dies()

    tool = allm.tool("die", handler=die)
    eng = fake_engine([tool_call("die", {})], ["ok"], tools=[tool])
    box: dict[str, Any] = {}
    th = threading.Thread(target=lambda: box.setdefault("r", _safe(lambda: allm.chat(eng, "go", tool_timeout=None))), daemon=True)
    th.start()
    th.join(20)
    assert not th.is_alive(), "chat hung on a dead worker"


def _safe(fn: Any) -> Any:
    try:
        return fn()
    except BaseException as exc:
        return exc


# ------------------------------------------------------------------------------ 4, 5. structured finalize

FORMAT = allm.json_schema("answer", {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False})


def _lookup(args: dict[str, Any]) -> str:
    return "Paris"


LOOKUP = allm.tool("lookup", handler=_lookup)


def test_structured_finalize_second_pass_failure_keeps_the_first_pass() -> None:
    eng = fake_engine(
        [tool_call("lookup", {}, id="l1")],
        ["It is Paris."],
        [error("provider_unavailable", "down", before_stream=True)],
        tools=[LOOKUP],
    )
    req = allm.request([allm.user("Capital?")], response_format=FORMAT)
    r = allm.chat(eng, req, structured_finalize=True, retry=allm.RetryPolicy(max_attempts=1))
    assert r.halted_reason == "error"
    assert [m.role for m in r.thread.messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert r.thread.messages[2].text == "Paris"
    assert r.metadata["structured_finalize"] == {"pass_1_halted": "completed"}


async def test_structured_finalize_second_pass_failure_keeps_the_first_pass_async() -> None:
    eng = fake_engine([text("It is Paris.")], [error("provider_unavailable", "down", before_stream=True)])
    req = allm.request([allm.user("Capital?")], response_format=FORMAT)
    r = await allm.achat(eng, req, structured_finalize=True, retry=allm.RetryPolicy(max_attempts=1))
    assert r.halted_reason == "error"
    assert r.thread.messages[1].text == "It is Paris."


def test_session_operations_honour_structured_finalize() -> None:
    eng = fake_engine([tool_call("lookup", {}, id="l1")], ["It is Paris."], ['{"city": "Paris"}'], tools=[LOOKUP])
    session, result = allm.Session.start(eng, "Capital?", params={"response_format": FORMAT}, structured_finalize=True)
    sent = eng.adapter.requests  # type: ignore[attr-defined]
    assert [bool(r.tools) for r in sent] == [True, True, False]
    assert [r.response_format for r in sent] == [None, None, FORMAT]
    assert session.status == "completed" and result.final_response is not None
    assert result.final_response.output_text == '{"city": "Paris"}'
    # A reply runs the same two passes.
    eng2 = fake_engine(["Still Paris."], ['{"city": "Paris"}'])
    session2, _ = session.reply(eng2, "Sure?", params={"response_format": FORMAT}, structured_finalize=True)
    assert [r.response_format for r in eng2.adapter.requests] == [None, FORMAT]  # type: ignore[attr-defined]
    assert session2.thread.messages[-1].text == '{"city": "Paris"}'


# ------------------------------------------------------------------------------ 7. duplicate tool names


def test_duplicate_tool_names_later_replaces_earlier_everywhere() -> None:
    first = allm.tool("lookup", "first", handler=lambda a: "first")
    second = allm.tool("lookup", "second", handler=lambda a: "second")
    # Per call.
    eng = fake_engine([tool_call("lookup", {})], ["ok"])
    r = allm.chat(eng, "go", tools=[first, second])
    sent = eng.adapter.requests[0].tools  # type: ignore[attr-defined]
    assert [t.description for t in sent] == ["second"] and r.thread.messages[2].text == "second"
    # On the engine: one definition, and its handler is the one that runs.
    eng = fake_engine([tool_call("lookup", {})], ["ok"], tools=[first, second])
    assert [t.description for t in eng.tools] == ["second"]
    r = allm.chat(eng, "go")
    assert [t.description for t in eng.adapter.requests[0].tools] == ["second"]  # type: ignore[attr-defined]
    assert r.thread.messages[2].text == "second"


def test_tools_that_are_not_tool_values_are_a_validation_error() -> None:
    with pytest.raises(allm.ValidationError) as info:
        allm.chat(fake_engine(["x"]), "go", tools=["lookup"])  # type: ignore[list-item]
    assert info.value.reason == "invalid_tool"


# ------------------------------------------------------------------------------ 10. defaulted parameters


def test_handler_with_a_defaulted_second_parameter_gets_no_context() -> None:
    seen: list[Any] = []

    def lookup(args: dict[str, Any], limit: int = 10) -> int:
        seen.append(limit)
        return limit

    fns = [lambda a, v=i: v for i in range(3)]
    eng = fake_engine([tool_call("lookup", {}), tool_call("f0", {}), tool_call("f2", {})], ["ok"],
                      tools=[allm.tool("lookup", handler=lookup), allm.tool("f0", handler=fns[0]), allm.tool("f2", handler=fns[2])])
    r = allm.chat(eng, "go")
    assert seen == [10]
    assert [m.text for m in r.thread.messages if m.role == "tool"] == ["10", "0", "2"]

    def with_ctx(args: dict[str, Any], ctx: allm.ToolContext = None) -> str:  # type: ignore[assignment]
        return ctx.tool_name

    def positional(args: dict[str, Any], ctx: Any) -> str:
        return str(ctx.session_id)

    eng = fake_engine([tool_call("with_ctx", {}), tool_call("positional", {})], ["ok"],
                      tools=[allm.tool("with_ctx", handler=with_ctx), allm.tool("positional", handler=positional)])
    r = allm.chat(eng, "go", session_id="s-1")
    assert [m.text for m in r.thread.messages if m.role == "tool"] == ["with_ctx", "s-1"]


# ------------------------------------------------------------------------------ 21. on_tool_error replacement


def test_on_tool_error_may_return_a_replacement_result_the_model_sees() -> None:
    def boom(args: dict[str, Any]) -> None:
        raise RuntimeError("database down")

    seen: list[str] = []

    def policy(call: allm.ToolCall, err: allm.ToolError) -> Any:
        seen.append(err.reason)
        return ("continue", {"cached": True, "value": 41})

    eng = fake_engine([tool_call("lookup", {}, id="c1")], ["ok"], tools=[allm.tool("lookup", handler=boom)])
    r = allm.chat(eng, "go", on_tool_error=policy)
    tool_msg = r.thread.messages[2]
    assert seen == ["handler_raised"]
    assert r.halted_reason == "completed"
    assert not tool_msg.is_error and orjson.loads(tool_msg.text) == {"cached": True, "value": 41}
    assert eng.adapter.requests[1].messages[2].text == tool_msg.text  # type: ignore[attr-defined]
    # Anything else still halts, naming what was returned.
    eng = fake_engine([tool_call("lookup", {}, id="c1")], ["ok"], tools=[allm.tool("lookup", handler=boom)])
    r = allm.chat(eng, "go", on_tool_error=lambda c, e: ("retry", 1))
    assert r.halted_reason == "tool_error" and "('retry', 1)" in r.metadata["on_tool_error_exception"]


# ------------------------------------------------------------------------------ 22. a time budget for the whole chat


def _slow(args: dict[str, Any]) -> str:
    time.sleep(0.3)
    return "slow result"


def test_time_budget_spans_turns_and_tools_and_names_itself() -> None:
    from allm.testing import delay

    turns = [[tool_call("slow", {}, id=f"c{i}")] for i in range(20)]
    eng = fake_engine(*turns, tools=[allm.tool("slow", handler=_slow)])
    t0 = time.monotonic()
    r = allm.chat(eng, "go", time_budget=1.0, max_turns=50)
    elapsed = time.monotonic() - t0
    assert r.halted_reason == "time_budget" and r.metadata["time_budget"] == 1.0
    assert 1.0 <= elapsed < 3.0
    assert 2 <= len(r.steps) <= 5
    assert r.thread.messages[-1].role == "tool"  # the thread so far is kept
    # A model call the budget cuts short ends the chat the same way (the call's error kept).
    eng = fake_engine([tool_call("slow", {}, id="c1")], [delay(5.0), text("too late")], tools=[allm.tool("slow", handler=_slow)])
    t0 = time.monotonic()
    r = allm.chat(eng, "go", time_budget=0.8)
    assert time.monotonic() - t0 < 3.0
    assert r.halted_reason == "time_budget" and r.metadata["error"].reason == "timeout"
    # A tool that outlives the budget is cut at what is left.
    eng = fake_engine([tool_call("sleepy", {}, id="c1")], ["never"], tools=[allm.tool("sleepy", handler=lambda a: time.sleep(5))])
    t0 = time.monotonic()
    r = allm.chat(eng, "go", time_budget=0.5)
    assert time.monotonic() - t0 < 3.0 and r.halted_reason == "time_budget"
    assert "did not finish" in r.thread.messages[2].text


async def test_time_budget_in_achat_and_sessions() -> None:
    turns = [[tool_call("slow", {}, id=f"c{i}")] for i in range(20)]
    eng = fake_engine(*turns, tools=[allm.tool("slow", handler=_slow)])
    r = await allm.achat(eng, "go", time_budget=0.8, max_turns=50)
    assert r.halted_reason == "time_budget"
    eng = fake_engine(*turns, tools=[allm.tool("slow", handler=_slow)])
    session, result = allm.Session.start(eng, "go", time_budget=0.8, max_turns=50)
    assert result.halted_reason == "time_budget" and session.status == "completed"
    with pytest.raises(ValueError):
        allm.chat(eng, "go", time_budget=0)


# ------------------------------------------------------------------------------ 8. duplicate tool-call ids


def test_duplicate_tool_call_ids_in_one_response_are_made_unique() -> None:
    seen: list[Any] = []
    tool = allm.tool("a", handler=lambda args: seen.append(args) or len(seen))
    eng = fake_engine([tool_call("a", {"n": 1}, id="dup"), tool_call("a", {"n": 2}, id="dup")], ["ok"], tools=[tool])
    r = allm.chat(eng, "go")
    assert r.halted_reason == "completed" and seen == [{"n": 1}, {"n": 2}]
    calls = r.thread.messages[1].tool_calls
    assert [c.id for c in calls] == ["dup", "dup_2"]
    assert [(m.tool_call_id, m.text) for m in r.thread.messages[2:4]] == [("dup", "1"), ("dup_2", "2")]


def test_duplicate_tool_call_ids_from_a_server_are_made_unique(echo: LoopbackServer) -> None:
    async def dup(req: Req, w: Writer) -> None:
        await w.start_stream()
        for i in range(2):
            call = {"index": i, "id": "call_same", "type": "function", "function": {"name": "a", "arguments": orjson.dumps({"n": i}).decode()}}
            chunk = {"id": "x", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}
            await w.chunk(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await w.chunk(b'data: {"id":"x","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n')
        await w.chunk(b"data: [DONE]\n\n")
        await w.end_stream()

    echo.handler = dup
    engine = allm.Engine(adapter=OpenAICompatible(echo.url), model="m", tools=[allm.tool("a", handler=lambda a: a["n"], manual=True)])
    session, _result = allm.Session.start(engine, "go")
    assert session.status == "awaiting_tools"
    ids = [c.id for c in session.pending_tool_calls]
    assert ids == ["call_same", "call_same_2"]
    s1 = session.submit_tool_result("call_same", 0)
    assert [c.id for c in s1.pending_tool_calls] == ["call_same_2"] and s1.status == "awaiting_tools"
    s2 = s1.submit_tool_result("call_same_2", 1)
    assert s2.status == "idle"


# ------------------------------------------------------------------------------ 14. a JSON body answering a stream


@pytest.mark.parametrize("asynchronous", [False, True])
def test_json_body_answering_a_streaming_request_is_decoded_as_a_body(echo: LoopbackServer, asynchronous: bool) -> None:
    state = {"body": b""}

    async def json_answer(req: Req, w: Writer) -> None:
        await w.respond(200, state["body"])

    echo.handler = json_answer
    engine = allm.Engine(adapter=OpenAICompatible(echo.url), model="m")

    def run() -> allm.Response:
        if asynchronous:
            return asyncio.run(allm.agenerate(engine, "hi", retry=allm.RetryPolicy(max_attempts=1)))
        return allm.generate(engine, "hi", retry=allm.RetryPolicy(max_attempts=1))

    state["body"] = orjson.dumps({"id": "c1", "object": "chat.completion", "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "a whole answer"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}})
    r = run()
    assert r.output_text == "a whole answer" and r.finish_reason == "stop" and r.usage.input_tokens == 3
    state["body"] = orjson.dumps({"error": {"message": "the proxy refused: quota", "type": "insufficient_quota", "code": "insufficient_quota"}})
    with pytest.raises(allm.AdapterError) as info:
        run()
    assert "the proxy refused: quota" in str(info.value)


# ------------------------------------------------------------------------------ 16. a closed pipe


@pytest.mark.parametrize("argv", [["chat", "--provider", "fake", "hello there"], ["models", "--provider", "fake"]])
def test_cli_output_into_a_closed_pipe_exits_quietly(argv: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": ROOT}
    cmd = f"{sys.executable} -m allm {' '.join(repr(a) for a in argv)} | head -c 1"
    for _ in range(3):  # the reader closes early; whichever write meets it must be quiet
        out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=env, timeout=60)
        assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
        assert out.returncode == 0


def test_cli_broken_pipe_is_quiet_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from allm import cli

    class Closed:
        def write(self, s: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self) -> int:
            return r

    r, w = os.pipe()
    monkeypatch.setattr(sys, "stdout", Closed())
    try:
        assert cli.main(["models", "--provider", "fake"]) == 0
    finally:
        os.close(w)


# ------------------------------------------------------------------------------ 17. retry=False


def test_retry_false_means_no_retries() -> None:
    calls = {"n": 0}

    async def flaky(req: Req, w: Writer) -> None:
        calls["n"] += 1
        await w.respond(503, b'{"error": {"message": "busy"}}')

    with serve(flaky) as server:
        engine = allm.Engine(adapter=OpenAICompatible(server.url), model="m")
        with pytest.raises(allm.AdapterError):
            allm.generate(engine, "hi", retry=False)
        assert calls["n"] == 1
        with pytest.raises(allm.AdapterError):
            allm.generate(allm.Engine(adapter=OpenAICompatible(server.url), model="m", retry=False), "hi")
        assert calls["n"] == 2
        with pytest.raises(allm.AdapterError):
            allm.generate(engine, "hi", retry=allm.RetryPolicy(base_delay=0.01, max_delay=0.01))
        assert calls["n"] == 5  # the default policy: three attempts
    with pytest.raises(TypeError):
        allm.Engine(adapter=OpenAICompatible("http://127.0.0.1:9/v1"), model="m", retry="no")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ 23. count_tokens


def test_count_tokens_on_the_fake_sync_and_async() -> None:
    eng = fake_engine(["x"])
    req = allm.request([allm.system("Be brief."), allm.user("How many tokens is this?")])
    n = allm.count_tokens(eng, req)
    assert isinstance(n, int) and n > 0
    assert asyncio.run(allm.acount_tokens(eng, req)) == n
    assert allm.count_tokens(eng, "one two three") < n


_COUNT_ANSWERS = {
    "anthropic": (b'{"input_tokens": 17}', "/messages/count_tokens"),
    "gemini": (b'{"totalTokens": 19, "totalBillableCharacters": 80}', ":countTokens"),
    "responses": (b'{"object": "response.input_tokens", "input_tokens": 23}', "/responses/input_tokens"),
}


@pytest.mark.parametrize("provider", sorted(_COUNT_ANSWERS))
@pytest.mark.parametrize("asynchronous", [False, True])
def test_count_tokens_goes_through_keys_retries_and_deadlines(provider: str, asynchronous: bool) -> None:
    from allm.providers import registry

    body, path = _COUNT_ANSWERS[provider]
    seen: list[Req] = []

    async def answer(req: Req, w: Writer) -> None:
        seen.append(req)
        if len(seen) == 1:
            await w.respond(429, b'{"error": {"message": "slow down"}}', {"retry-after-ms": "10"})
        else:
            await w.respond(200, body)

    with serve(answer) as server:
        engine = allm.Engine(adapter=registry.build(provider, base_url=server.url), model="some-model")
        req = allm.request([allm.user("Count me.")])
        key = "sk-count-tokens-key-0123456789"
        if asynchronous:
            n = asyncio.run(allm.acount_tokens(engine, req, api_key=key))
        else:
            n = allm.count_tokens(engine, req, api_key=key)
        assert n == int(orjson.loads(body).get("input_tokens") or orjson.loads(body)["totalTokens"])
        assert len(seen) == 2 and seen[1].path.split("?")[0].endswith(path)
        assert any(key in v for v in seen[1].headers.values())  # the key went in the auth header

        async def stall(req: Req, w: Writer) -> None:
            await asyncio.sleep(5)

        server.handler = stall
        quick = attrs.evolve(engine, timeouts=allm.Timeouts(first_event=0.3), retry=False)
        t0 = time.monotonic()
        with pytest.raises(allm.AdapterError) as info:
            if asynchronous:
                asyncio.run(allm.acount_tokens(quick, req, api_key=key))
            else:
                allm.count_tokens(quick, req, api_key=key)
        assert info.value.reason == "timeout" and time.monotonic() - t0 < 3
    with pytest.raises(allm.EngineError) as info2:
        allm.count_tokens(allm.Engine(adapter=OpenAICompatible("http://127.0.0.1:9/v1"), model="m"), "hi")
    assert info2.value.reason == "unsupported_operation"


# ------------------------------------------------------------------------------ 19, 24. sessions: cache key, thread helpers


def test_session_id_is_the_default_prompt_cache_key() -> None:
    eng = fake_engine(["a"], ["b"], ["c"])
    session, _ = allm.Session.start(eng, "hi", id="ses_cache", params={"prompt_cache": allm.PromptCache(retention="1h")})
    sent = eng.adapter.requests[0]  # type: ignore[attr-defined]
    assert sent.prompt_cache == allm.PromptCache(key="ses_cache", retention="1h")
    # A key the caller chose wins; no prompt_cache asked, none sent.
    session.reply(eng, "again", params={"prompt_cache": allm.PromptCache(key="mine")})
    assert eng.adapter.requests[1].prompt_cache == allm.PromptCache(key="mine")  # type: ignore[attr-defined]
    session.reply(eng, "plain")
    assert eng.adapter.requests[2].prompt_cache is None  # type: ignore[attr-defined]


def test_session_id_is_the_cache_key_on_the_wire(echo: LoopbackServer) -> None:
    engine = allm.Engine(
        adapter=allm.providers.registry.build("openai", base_url=echo.url),
        model="gpt-4.1-mini",
        defaults={"prompt_cache": allm.PromptCache(retention="24h")},
    )
    allm.Session.start(engine, "cache me", id="ses_wire", api_key="sk-test-0123456789abcdef")
    body = orjson.loads(echo.requests[-1].body)
    assert body["prompt_cache_key"] == "ses_wire" and body["prompt_cache_retention"] == "24h"


def test_session_thread_helpers_return_new_sessions() -> None:
    s = allm.Session.new("hi")
    s2 = s.add_system("Be brief.").add_assistant("Hello.").add_user("Again?")
    assert [m.role for m in s2.thread.messages] == ["user", "system", "assistant", "user"]
    assert s.thread.messages == (allm.user("hi"),) and s2.id == s.id and s2.status == s.status
    call = allm.ToolCall("c1", "lookup", {})
    s3 = s2.add_assistant(tool_calls=[call]).add_tool_result("c1", "42", name="lookup")
    assert s3.thread.messages[-1].tool_call_id == "c1" and s3.thread.messages[-1].text == "42"
    assert allm.Session.from_json(s3.to_json()) == s3
