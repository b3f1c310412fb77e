"""JSON and pickle round trips of every value, and reading data stored by earlier versions."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import allm
from allm import codec
from allm.providers import Dialect, Fake, OpenAI, OpenAICompatible
from allm.testing import text, tool_call, usage
from tests import strategies as s

STORED = Path(__file__).parent / "fixtures" / "stored"


@settings(max_examples=300, deadline=None)
@given(s.values)
def test_json_round_trip_is_lossless(value: Any) -> None:
    data = codec.dumps(value)
    back = codec.loads(data)
    assert back == value
    assert type(back) is type(value)
    assert codec.dumps(back) == data


@settings(max_examples=200, deadline=None)
@given(s.values)
def test_pickle_round_trip_is_lossless(value: Any) -> None:
    assert pickle.loads(pickle.dumps(value)) == value


@settings(max_examples=100, deadline=None)
@given(s.threads, st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_threads_pickle_at_every_protocol(thread: allm.Thread, protocol: int) -> None:
    back = pickle.loads(pickle.dumps(thread, protocol))
    assert back == thread and type(back) is allm.Thread
    assert all(type(m) is allm.Message for m in back.messages)


@attrs.frozen
class _TaggedThread(allm.Thread):
    tag: str = ""


def test_a_thread_subclass_pickles_with_its_own_fields() -> None:
    t = _TaggedThread([allm.user("hi"), allm.assistant("", [allm.ToolCall("c1", "f", {"a": 1})])], {"k": 1}, "x")
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(t, protocol))
        assert back == t and type(back) is _TaggedThread and back.tag == "x"


@settings(max_examples=100, deadline=None)
@given(s.errors)
def test_errors_pickle_and_compare_by_content(err: allm.AllmError) -> None:
    back = pickle.loads(pickle.dumps(err))
    assert back == err and type(back) is type(err) and str(back) == str(err)


def test_envelope_and_type_checks() -> None:
    d = codec.to_dict(allm.user("hi"))
    assert d == {"allm_schema": codec.SCHEMA_VERSION, "type": "Message", "value": {"role": "user", "content": "hi"}}
    assert codec.loads(codec.dumps(allm.user("hi")), allm.Message) == allm.user("hi")
    with pytest.raises(allm.ValidationError, match="expected a stored Thread"):
        codec.loads(codec.dumps(allm.user("hi")), allm.Thread)
    with pytest.raises(allm.ValidationError, match="schema 99"):
        codec.from_dict({"allm_schema": 99, "type": "Message", "value": {}})
    with pytest.raises(allm.ValidationError, match="not a stored allm value"):
        codec.from_dict({"role": "user"})
    with pytest.raises(allm.ValidationError, match="unknown stored type"):
        codec.from_dict({"allm_schema": 1, "type": "Nope", "value": {}})
    with pytest.raises(allm.ValidationError, match="not JSON"):
        codec.loads(b"{")
    with pytest.raises(allm.ValidationError, match="invalid"):
        codec.from_dict({"allm_schema": 1, "type": "Message", "value": {"role": "robot"}})
    with pytest.raises(TypeError, match="not a storable"):
        codec.dumps(object())


def test_tool_handler_is_not_stored() -> None:
    tool = allm.Tool("t", "d", {"type": "object"}, handler=lambda args: 1)
    data = codec.dumps(tool)
    assert b"handler" not in data
    back = codec.loads(data)
    assert back == tool and back.handler is None


def test_engines_round_trip_without_keys() -> None:
    engines = [
        allm.Engine(adapter=OpenAI(organization="o"), model="gpt-4.1-mini", defaults={"temperature": 0.0}),
        allm.Engine(adapter=OpenAICompatible.openrouter(app_title="t"), model="x", retry=allm.RetryPolicy(max_attempts=5)),
        allm.Engine(adapter=OpenAICompatible(dialect=Dialect("d", "d", "http://h/v1", sampling=frozenset({"top_k"}))), model="m"),
        allm.Engine(adapter=OpenAICompatible.llama_cpp(), model="smollm2", timeouts=allm.Timeouts(idle=3)),
    ]
    for e in engines:
        assert codec.loads(codec.dumps(e)) == e
        assert pickle.loads(pickle.dumps(e)) == e


def test_fake_engine_round_trips_with_its_script_and_cursor() -> None:
    fake = Fake(scripts=[[text("a"), usage(1, 2)], [tool_call("t", {"x": 1}, id="c1"), "b"]])
    engine = allm.Engine(adapter=fake, model="fake")
    allm.generate(engine, "first")
    back = codec.loads(codec.dumps(engine))
    resp = allm.generate(back, "second")
    assert resp.tool_calls[0].id == "c1" and resp.output_text == "b"
    with pytest.raises(allm.ValidationError, match="function"):
        codec.dumps(allm.Engine(adapter=Fake(function=lambda r: "x")))


def test_error_in_response_metadata_comes_back_typed() -> None:
    err = allm.AdapterError("boom", reason="provider_unavailable", status=529, retry_after=2.0, provider="anthropic")
    resp = allm.Response(allm.assistant("partial"), finish_reason="error", metadata={"error": err, "n": [1, {"a": None}]})
    back = codec.loads(codec.dumps(resp))
    assert back == resp
    assert isinstance(back.metadata["error"], allm.AdapterError) and back.metadata["error"].status == 529


# Values stored by this version. Later versions must keep loading them (never edit these files).
STORED_VALUES: dict[str, Any] = {
    "thread_v1.json": allm.Thread(
        [
            allm.system("Be brief."),
            allm.user([allm.TextPart("What is this?"), allm.ImagePart.from_bytes(b"\x89PNG\r\n", "image/png", "low")]),
            allm.Message(
                "assistant",
                (allm.ReasoningPart("thinking", signature="sig", provider="anthropic"), allm.TextPart("Checking.")),
                tool_calls=[allm.ToolCall("call_1", "lookup", {"q": "png"}, '{"q": "png"}', metadata={"gemini": {"thought_signature": "ts"}})],
            ),
            allm.tool_result("call_1", '{"found": true}'),
            allm.assistant("A PNG header."),
        ],
        metadata={"conversation": "demo"},
    ),
    "request_v1.json": allm.request(
        [allm.user("hi")],
        model="gpt-4.1-mini",
        tools=[allm.Tool("lookup", "Find", {"type": "object", "properties": {"q": {"type": "string"}}}, strict=True)],
        tool_choice="auto",
        temperature=0.0,
        max_tokens=64,
        stop_sequences=["END"],
        response_format=allm.json_schema("a", {"type": "object"}),
        options={"user": "u1"},
    ),
    "response_v1.json": allm.Response(
        allm.assistant("partial"),
        id="resp_1",
        request_id="r" * 22,
        model="m",
        output_text="partial",
        finish_reason="error",
        raw_finish_reason=None,
        usage=allm.Usage(10, 2, 4, None, 0, 12),
        warnings=("top_k is not supported by openai and was not sent",),
        metadata={"error": allm.AdapterError("overloaded", reason="provider_unavailable", status=529)},
    ),
}


@pytest.mark.parametrize("name", sorted(STORED_VALUES))
def test_values_stored_by_version_1_still_load(name: str) -> None:
    path = STORED / name
    if not path.exists():  # first run of this version writes the fixture
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(codec.to_dict(STORED_VALUES[name]), option=orjson.OPT_INDENT_2))
    assert codec.loads(path.read_bytes()) == STORED_VALUES[name]


def test_string_warnings_of_version_1_load_as_typed_warnings() -> None:
    loaded = codec.loads((STORED / "response_v1.json").read_bytes(), allm.Response)
    (w,) = loaded.warnings
    assert isinstance(w, allm.types.CallWarning)
    assert (w.kind, w.setting, str(w)) == ("dropped_setting", "top_k", "top_k is not supported by openai and was not sent")
    other = codec.from_dict({"allm_schema": 1, "type": "Response", "value": {"message": {"role": "assistant", "content": ""}, "warnings": ["a note"]}})
    assert other.warnings == (allm.types.CallWarning("other", None, None, "a note"),)
    # Stored again, a warning is an object with its fields (defaults omitted).
    assert codec.to_dict(loaded)["value"]["warnings"] == [
        {"kind": "dropped_setting", "setting": "top_k", "message": "top_k is not supported by openai and was not sent"}
    ]


def test_call_warning_from_text_reads_only_request_settings() -> None:
    cw = allm.types.CallWarning
    assert cw.from_text("seed is not supported by Anthropic and was not sent").setting == "seed"
    assert cw.from_text("bogus is not supported by X and was not sent").kind == "other"
    assert cw.from_text("a system message after the first turn was moved").kind == "other"
    assert allm.Response(allm.assistant(""), warnings=["seed is not supported by Gemini and was not sent"]).warnings[0].setting == "seed"


@attrs.frozen
class Money:
    cents: int


@attrs.frozen
class Invoice:
    total: Money
    memo: str | Money = ""


def test_register_takes_a_module_s_values_and_hooks() -> None:
    codec.register(Invoice, name="test.Invoice")
    codec.register(Money, unstructure=lambda m: f"{m.cents / 100:.2f}", structure=lambda v: Money(round(float(v) * 100)), storable=False)
    codec.register(str | Money, unstructure=lambda v: v if isinstance(v, str) else {"money": codec.unstructure(v, Money)},
                   structure=lambda v: v if isinstance(v, str) else codec.structure(v["money"], Money))
    inv = Invoice(Money(1250), Money(5))
    d = codec.to_dict(inv)
    assert d == {"allm_schema": 1, "type": "test.Invoice", "value": {"total": "12.50", "memo": {"money": "0.05"}}}
    assert codec.from_dict(d) == inv and codec.loads(codec.dumps(Invoice(Money(1)))) == Invoice(Money(1))
    with pytest.raises(TypeError, match="not a storable"):
        codec.dumps(Money(1))  # hooks only


def test_loads_finds_values_registered_by_modules_not_yet_imported() -> None:
    import subprocess
    import sys

    session = (Path(__file__).parent / "fixtures" / "sessions" / "awaiting_tools.json").read_bytes()
    engine = codec.dumps(allm.Engine(adapter=OpenAICompatible(dialect=Dialect("d", "d", "http://h/v1")), model="m"))
    fake = codec.dumps(allm.Engine(adapter=Fake(["x"], models=["a"]), model="m"))
    code = (
        "import sys, allm, allm.codec as codec\n"
        "assert 'allm.session' not in sys.modules and 'allm.providers.openai' not in sys.modules\n"
        f"s = codec.loads({session!r})\n"
        "assert type(s).__name__ == 'Session' and s.status == 'awaiting_tools'\n"
        f"e = codec.loads({engine!r})\n"
        "assert e.adapter.dialect.base_url == 'http://h/v1'\n"
        f"f = codec.loads({fake!r})\n"
        "assert allm.list_models(f) == ['a']\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "ok"
