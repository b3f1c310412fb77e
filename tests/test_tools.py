"""Tool construction, schemas from functions, argument checks, runners and encoding."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import enum
import time
from typing import Annotated, Any, Literal, TypedDict

import attrs
import orjson
import pytest

import allm
from allm import runner as R
from allm import tools as T
from allm.errors import ToolError, ValidationError
from allm.types import ToolCall

OBJ = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def job(tool: allm.Tool, args: dict[str, Any] | None = None, *, id: str = "c1", raw: str | None = None) -> T.ToolJob:
    if raw is not None:
        from allm.providers.assembler import parse_arguments

        parsed, err = parse_arguments(raw)
        call = ToolCall(id, tool.name, parsed, raw, err)
    else:
        call = ToolCall(id, tool.name, args or {}, orjson.dumps(args or {}).decode())
    return T.ToolJob(call, tool, T.ToolContext(call), T.validate_arguments(tool, call))


# ------------------------------------------------------------------------------ construction


def test_tool_builds_a_checked_tool() -> None:
    t = allm.tool("get_weather", "Weather.", OBJ, handler=lambda a: a)
    assert t.name == "get_weather" and t.schema == OBJ and not t.manual
    assert allm.tool("noargs").schema == {"type": "object", "properties": {}}


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "dots.not.allowed", "ünï"])
def test_tool_rejects_bad_names(name: str) -> None:
    with pytest.raises(ValidationError) as e:
        allm.tool(name)
    assert e.value.reason == "invalid_tool"


def test_tool_rejects_non_object_schema_and_invalid_schema() -> None:
    with pytest.raises(ValidationError, match="type"):
        allm.tool("t", schema={"type": "string"})
    with pytest.raises(ValidationError, match="invalid JSON Schema"):
        allm.tool("t", schema={"type": "object", "properties": {"a": {"type": "nope"}}})
    with pytest.raises(ValidationError, match="not JSON"):
        allm.tool("t", schema={"type": "object", "default": object()})


def test_tool_rejects_bad_handlers_and_manual() -> None:
    with pytest.raises(ValidationError, match="callable"):
        allm.tool("t", handler=42)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="positional"):
        allm.tool("t", handler=lambda a, b, c: None)
    with pytest.raises(ValidationError, match="positional"):
        allm.tool("t", handler=lambda: None)
    with pytest.raises(ValidationError, match="keyword-only"):

        def h(a: Any, *, must: int) -> None: ...

        allm.tool("t", handler=h)
    with pytest.raises(ValidationError, match="manual"):
        allm.tool("t", manual="yes")  # type: ignore[arg-type]


def test_handler_arity() -> None:
    assert T.handler_arity(lambda a: a) == 1
    assert T.handler_arity(lambda a, ctx: a) == 2
    # A defaulted parameter keeps its default unless it is annotated for the context.
    assert T.handler_arity(lambda a, ctx=None: a) == 1
    assert T.handler_arity(lambda a, limit=10: a) == 1

    def annotated(a: Any, ctx: allm.ToolContext | None = None) -> Any:
        return a

    assert T.handler_arity(annotated) == 2
    assert T.handler_arity(lambda *args: args) == 2

    class C:
        def __call__(self, args: Any) -> Any:
            return args

    assert T.handler_arity(C()) == 1


# ------------------------------------------------------------------------------ schema from a function


class Unit(enum.Enum):
    C = "c"
    F = "f"


class Place(TypedDict):
    city: str
    country: str


def test_function_tool_schema_and_docstring() -> None:
    def forecast(
        city: str,
        days: Annotated[int, "How many days ahead"] = 1,
        unit: Unit = Unit.C,
        detail: Literal["short", "long"] = "short",
        tags: list[str] | None = None,
        extra: dict[str, float] | None = None,
        place: Place | None = None,
        ctx: allm.ToolContext | None = None,
    ) -> dict[str, Any]:
        """Forecast for a city.

        Uses the national service.

        Args:
            city: The city name,
                e.g. Paris.
            unit: Temperature unit.

        Returns:
            The forecast.
        """
        return {}

    t = allm.function_tool(forecast)
    assert t.name == "forecast"
    assert t.description == "Forecast for a city.\n\nUses the national service."
    s = t.schema
    assert s["required"] == ["city"] and s["additionalProperties"] is False
    p = s["properties"]
    assert p["city"] == {"type": "string", "description": "The city name, e.g. Paris."}
    assert p["days"] == {"type": "integer", "description": "How many days ahead"}
    assert p["unit"] == {"type": "string", "enum": ["c", "f"], "description": "Temperature unit."}
    assert p["detail"] == {"type": "string", "enum": ["short", "long"]}
    assert p["tags"] == {"type": ["array", "null"], "items": {"type": "string"}}
    assert p["extra"] == {"type": ["object", "null"], "additionalProperties": {"type": "number"}}
    assert p["place"]["type"] == ["object", "null"] and p["place"]["required"] == ["city", "country"]
    assert "ctx" not in p


def test_docstring_styles() -> None:
    desc, params = T.parse_docstring(":param a: first\n:param int b: second\n    continued\n:returns: x")
    assert desc == "" and params == {"a": "first", "b": "second continued"}
    desc, params = T.parse_docstring("Summary.\n\nParameters\n----------\na : int\n    first one\nb : str\n    second\n")
    assert desc == "Summary." and params == {"a": "first one", "b": "second"}
    assert T.parse_docstring(None) == ("", {})


def test_function_tool_runs_with_keywords_enum_and_context() -> None:
    seen: dict[str, Any] = {}

    @allm.function_tool(name="weather", description="Weather.", manual=True)
    def get_weather(city: str, unit: Unit = Unit.C, ctx: allm.ToolContext | None = None) -> str:
        seen.update(city=city, unit=unit, ctx=ctx)
        return f"{city}:{unit.value}"

    assert get_weather.name == "weather" and get_weather.manual and get_weather.description == "Weather."
    out = R.run_tool(job(get_weather, {"city": "Oslo", "unit": "f"}))
    assert out.value == "Oslo:f" and seen["unit"] is Unit.F
    assert isinstance(seen["ctx"], allm.ToolContext) and seen["ctx"].tool_call.id == "c1"
    assert get_weather.handler is not None and get_weather.handler.function.__name__ == "get_weather"  # type: ignore[attr-defined]


def test_function_tool_without_a_context_parameter() -> None:
    @allm.function_tool
    def lookup(order_id: str) -> str:
        """Look an order up."""
        return f"found {order_id}"

    assert T.handler_arity(lookup.handler) == 2  # type: ignore[arg-type]
    assert R.run_tool(job(lookup, {"order_id": "A-1"})).value == "found A-1"
    assert lookup.handler.__name__ == "lookup" and lookup.handler.__doc__ == "Look an order up."  # type: ignore[union-attr]


def test_function_tool_async() -> None:
    @allm.function_tool
    async def add(a: int, b: int) -> int:
        """Add two numbers."""
        await asyncio.sleep(0)
        return a + b

    assert R.run_tool(job(add, {"a": 2, "b": 3})).value == 5


def test_function_tool_rejects_what_json_cannot_describe() -> None:
    def varargs(*names: str) -> None: ...

    def obj(x: object, when: complex) -> None: ...

    def keys(m: dict[int, str]) -> None: ...

    with pytest.raises(TypeError, match=r"\*args"):
        allm.function_tool(varargs)
    with pytest.raises(TypeError, match="complex"):
        allm.function_tool(obj)
    with pytest.raises(TypeError, match="string keys"):
        allm.function_tool(keys)


# ------------------------------------------------------------------------------ argument checks


def test_validate_arguments_parse_error_and_schema() -> None:
    t = allm.tool("get_weather", schema=OBJ, handler=lambda a: a)
    bad_json = job(t, raw='{"city": "Par')
    assert bad_json.error is not None and bad_json.error.reason == "invalid_arguments"
    assert "could not be read" in bad_json.error.message and "not valid JSON" in bad_json.error.message
    not_obj = job(t, raw="[1, 2]")
    assert not_obj.error is not None and "must be a JSON object" in not_obj.error.message
    wrong = job(t, {"city": 3, "extra": True})
    assert wrong.error is not None
    assert "at 'city': 3 is not of type 'string'" in wrong.error.message
    missing = job(t, {})
    assert missing.error is not None and "'city' is a required property" in missing.error.message
    assert job(t, {"city": "Paris"}).error is None


def test_without_jsonschema_arguments_are_not_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    t = allm.tool("get_weather", schema=OBJ, handler=lambda a: a)
    import allm.schema as S

    monkeypatch.setattr(S, "_js_module", False)
    monkeypatch.setattr(S, "_js_missing_warned", False)
    with pytest.warns(RuntimeWarning, match="jsonschema is not installed"):
        assert T.validate_arguments(t, ToolCall("c", "get_weather", {"city": 3})) is None
    # Invalid JSON is still caught: it needs no schema library.
    assert T.validate_arguments(t, ToolCall("c", "get_weather", {}, "{", "bad")) is not None


# ------------------------------------------------------------------------------ encoding


@attrs.frozen
class AttrsValue:
    a: int


@dataclasses.dataclass
class DataValue:
    b: str


def test_json_encoder() -> None:
    enc = allm.JsonResultEncoder()
    call = ToolCall("c", "t")
    assert enc.encode_result("plain text", call) == "plain text"
    assert enc.encode_result({"a": [1, 2.5, None, True]}, call) == '{"a":[1,2.5,null,true]}'
    assert enc.encode_result(AttrsValue(1), call) == '{"a":1}'
    assert enc.encode_result(DataValue("x"), call) == '{"b":"x"}'
    assert enc.encode_result({1: "x"}, call) == '{"1":"x"}'
    assert enc.encode_result({3, 1}, call) == "[1,3]"
    with pytest.raises(TypeError):
        enc.encode_result(object(), call)
    err = ToolError("boom", reason="handler_raised")
    assert orjson.loads(enc.encode_error(err, call)) == {"error": "handler_raised: boom"}


def test_as_encoder() -> None:
    assert isinstance(T.as_encoder(None), allm.JsonResultEncoder)
    f = T.as_encoder(lambda v: f"<{v}>")
    assert f.encode_result(1, ToolCall("c", "t")) == "<1>"
    assert "error" in f.encode_error(ToolError("x"), ToolCall("c", "t"))
    with pytest.raises(TypeError):
        T.as_encoder(3)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ runners


def sleepy(name: str, seconds: float, result: Any = None) -> allm.Tool:
    def h(args: Any) -> Any:
        time.sleep(seconds)
        return result if result is not None else name

    return allm.tool(name, handler=h)


def test_run_tools_is_concurrent_and_in_completion_order() -> None:
    slow, fast = sleepy("slow", 0.4), sleepy("fast", 0.05)
    t0 = time.monotonic()
    outs = list(R.run_tools([job(slow, id="a"), job(fast, id="b")], timeout=5))
    assert time.monotonic() - t0 < 0.7  # not 0.45 + overhead serially... both ran at once
    assert [o.call.id for o in outs] == ["b", "a"]
    assert [o.value for o in outs] == ["fast", "slow"]


def test_run_tools_timeout_and_prefailed_first() -> None:
    slow = sleepy("slow", 2.0)
    bad = allm.tool("bad", schema=OBJ, handler=lambda a: a)
    t0 = time.monotonic()
    outs = list(R.run_tools([job(slow, id="a"), job(bad, {}, id="b")], timeout=0.2))
    assert time.monotonic() - t0 < 1.0
    assert [o.call.id for o in outs] == ["b", "a"]
    assert outs[0].error is not None and outs[0].error.reason == "invalid_arguments"
    assert outs[1].error is not None and outs[1].error.reason == "timeout"
    assert "0.2 s" in outs[1].error.message


def test_one_sync_call_under_a_timeout_on_the_pool() -> None:
    """The usual step (one sync handler, a timeout): its value, its error, its timeout."""

    def raises_timeout(args: Any) -> Any:
        raise TimeoutError("the handler's own")

    async def late() -> str:
        await asyncio.sleep(5)
        return "late"

    [ok] = R.run_tools([job(sleepy("quick", 0.0, {"v": 1}))], timeout=5.0)
    assert ok.error is None and ok.value == {"v": 1}
    [own] = R.run_tools([job(allm.tool("own", handler=raises_timeout))], timeout=5.0)
    assert own.error is not None and own.error.reason == "handler_raised"
    assert own.error.message == "TimeoutError: the handler's own"
    t0 = time.monotonic()
    [slow] = R.run_tools([job(sleepy("slow", 2.0))], timeout=0.2)
    assert time.monotonic() - t0 < 1.0
    assert slow.error is not None and slow.error.reason == "timeout" and "0.2 s" in slow.error.message
    # A sync function returning a coroutine: settled on the worker, within the same timeout.
    [coro] = R.run_tools([job(allm.tool("coro", handler=lambda a: late()))], timeout=0.2)
    assert coro.error is not None and coro.error.reason == "timeout"


def test_one_async_call_runs_in_the_callers_task_in_a_copy_of_its_context() -> None:
    """The usual async step (one call) is awaited without a task of its own: still in a copy
    of the caller's context, still within its timeout, still cancelled with the caller."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []
    cancelled = asyncio.Event()

    async def sets(args: Any) -> str:
        seen.append(var.get())
        var.set("handler")
        await asyncio.sleep(0)
        seen.append(var.get())
        return "ok"

    async def hangs(args: Any) -> str:
        try:
            await asyncio.sleep(5)
        finally:
            cancelled.set()
        return "late"

    async def own_timeout(args: Any) -> str:
        raise TimeoutError("the handler's own")

    async def outcomes(t: allm.Tool, timeout: float | None) -> list[T.ToolOutcome]:
        return [o async for o in R.arun_tools([job(t)], timeout)]

    async def main() -> None:
        var.set("caller")
        [ok] = await outcomes(allm.tool("sets", handler=sets), 5.0)
        assert ok.value == "ok" and seen == ["caller", "handler"] and var.get() == "caller"
        t0 = time.monotonic()
        [slow] = await outcomes(allm.tool("hangs", handler=hangs), 0.2)
        assert time.monotonic() - t0 < 1.0 and cancelled.is_set()
        assert slow.error is not None and slow.error.reason == "timeout" and "0.2 s" in slow.error.message
        [own] = await outcomes(allm.tool("own", handler=own_timeout), 5.0)
        assert own.error is not None and own.error.reason == "handler_raised"
        assert own.error.message == "TimeoutError: the handler's own"
        cancelled.clear()
        task = asyncio.ensure_future(outcomes(allm.tool("hangs", handler=hangs), None))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cancelled.is_set()

    asyncio.run(main())


def test_run_tools_async_handler_timeout_is_enforced_inside() -> None:
    async def slow(args: Any) -> str:
        await asyncio.sleep(5)
        return "late"

    t = allm.tool("slow", handler=slow)
    out = R.run_tool(job(t), timeout=0.1)
    assert out.error is not None and out.error.reason == "timeout"


def test_handler_errors_become_tool_errors() -> None:
    def boom(args: Any) -> Any:
        raise ValueError("no such city")

    def typed(args: Any) -> Any:
        raise ToolError("quota exhausted", reason="handler_raised", metadata={"k": 1})

    out = R.run_tool(job(allm.tool("boom", handler=boom)))
    assert out.error is not None and out.error.reason == "handler_raised"
    assert out.error.message == "ValueError: no such city"
    assert isinstance(out.error.__cause__, ValueError)
    out2 = R.run_tool(job(allm.tool("typed", handler=typed)))
    assert out2.error is not None and out2.error.message == "quota exhausted" and out2.error.metadata == {"k": 1}


def test_run_tools_carries_contextvars() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="none")
    t = allm.tool("who", handler=lambda a: var.get())
    token = var.set("tenant-7")
    try:
        assert [o.value for o in R.run_tools([job(t)], 5)] == ["tenant-7"]
    finally:
        var.reset(token)


async def test_arun_tools_sync_handler_does_not_block_the_loop() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        outs = [o async for o in R.arun_tools([job(sleepy("slow", 0.3))], 5)]
    finally:
        task.cancel()
    assert outs[0].value == "slow"
    assert ticks >= 10  # the loop kept running while the sync handler slept


async def test_a_handler_whose_signature_cannot_be_read_is_a_tool_error() -> None:
    t = allm.Tool("odd", handler=max)  # built directly, bypassing the checks of allm.tool
    j = job(t)
    assert R.run_tool(j).error is not None
    outs = [o async for o in R.arun_tools([j], 1)]
    assert outs[0].error is not None and outs[0].error.reason == "handler_raised"


async def test_arun_tools_timeouts_and_order() -> None:
    async def fast(args: Any) -> str:
        await asyncio.sleep(0.01)
        return "fast"

    outs = [
        o async for o in R.arun_tools([job(sleepy("slow", 2.0), id="a"), job(allm.tool("fast", handler=fast), id="b")], 0.3)
    ]
    assert [o.call.id for o in outs] == ["b", "a"]
    assert outs[1].error is not None and outs[1].error.reason == "timeout"


async def test_an_async_handler_returning_an_awaitable_is_settled_within_its_timeout() -> None:
    async def inner(delay: float) -> str:
        await asyncio.sleep(delay)
        return "settled"

    async def quick(args: Any) -> Any:
        return inner(0.0)

    async def late(args: Any) -> Any:
        return inner(5.0)

    [ok] = [o async for o in R.arun_tools([job(allm.tool("quick", handler=quick))], 1.0)]
    assert ok.error is None and ok.value == "settled"
    t0 = time.monotonic()
    [slow] = [o async for o in R.arun_tools([job(allm.tool("late", handler=late))], 0.2)]
    assert time.monotonic() - t0 < 1.0
    assert slow.error is not None and slow.error.reason == "timeout"


async def test_arun_tools_close_cancels_async_handlers() -> None:
    cancelled = asyncio.Event()

    async def forever(args: Any) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    gen = R.arun_tools([job(allm.tool("forever", handler=forever))], None)
    step = asyncio.ensure_future(gen.__anext__())
    await asyncio.sleep(0.05)
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
    await gen.aclose()
    await asyncio.wait_for(cancelled.wait(), 1)
