"""Structured output: schemas derived from types, the response_format mapping of every adapter
against the recorded structured-output requests, generate_object end to end on the recorded
answers (over HTTP), invalid output, the re-ask, and the typed values."""

from __future__ import annotations

import dataclasses
import enum
import pickle
from collections.abc import Iterator
from typing import Any, Literal, NotRequired, Optional, TypedDict

import attrs
import orjson
import pytest

import allm
from allm import codec
from allm.errors import AdapterError, InvalidOutputError, ValidationError
from allm.providers import Anthropic, Fake, Gemini, OpenAICompatible, OpenAIResponses
from allm.structured import parse_object, schema_for, strict_problems
from allm.testing import error, fake_engine, finish, text, usage
from tests.conftest import load_capture, load_case
from tests.loopback import LoopbackServer, Req, Writer, serve

PERSON_SCHEMA = load_case("anthropic", "structured-output-json-schema").request["output_config"]["format"]["schema"]


@dataclasses.dataclass
class Person:
    name: str
    age: int


# ------------------------------------------------------------------------------ schemas from types


def test_a_dataclass_gives_the_schema_the_providers_were_sent() -> None:
    assert schema_for(Person) == PERSON_SCHEMA
    assert list(schema_for(Person)) == list(PERSON_SCHEMA)  # same key order too
    assert load_case("gemini", "structured-output-response-schema").request["generationConfig"]["responseJsonSchema"] == PERSON_SCHEMA
    assert load_case("openai-responses", "structured-output-json-schema").request["text"]["format"]["schema"] == PERSON_SCHEMA


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Address:
    """Where someone lives."""

    city: str
    country: str = dataclasses.field(metadata={"description": "ISO 3166 name"})


@dataclasses.dataclass
class Profile:
    name: str
    nickname: Optional[str]  # noqa: UP045 - the Optional spelling is what is being tested
    age: int | None
    height: float
    tags: list[str]
    scores: tuple[int, ...]
    home: Address
    previous: list[Address]
    favourite: Color
    mood: Literal["happy", "sad"]
    level: Literal[1, 2, 3] | None
    either: int | str
    verified: bool = False


def test_schema_for_a_rich_dataclass() -> None:
    s = schema_for(Profile)
    props = s["properties"]
    assert s["required"] == list(props) and s["additionalProperties"] is False
    assert props["name"] == {"type": "string"}
    assert props["nickname"] == {"type": ["string", "null"]} == props["age"] | {"type": ["string", "null"]}
    assert props["age"] == {"type": ["integer", "null"]}
    assert props["height"] == {"type": "number"} and props["verified"] == {"type": "boolean"}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["scores"] == {"type": "array", "items": {"type": "integer"}}
    assert props["home"] == {
        "type": "object",
        "description": "Where someone lives.",
        "properties": {"city": {"type": "string"}, "country": {"type": "string", "description": "ISO 3166 name"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    assert props["previous"] == {"type": "array", "items": props["home"]}
    assert props["favourite"] == {"type": "string", "enum": ["red", "blue"]}
    assert props["mood"] == {"type": "string", "enum": ["happy", "sad"]}
    assert props["level"] == {"type": ["integer", "null"], "enum": [1, 2, 3, None]}
    assert props["either"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert "description" not in s  # dataclasses' generated signature is not a description
    assert strict_problems(s) == []


@attrs.frozen
class Pet:
    """A pet."""

    name: str = attrs.field(metadata={"description": "what it answers to"})
    _age: int = 0
    legs: int = attrs.field(default=4, init=False)


class Movie(TypedDict):
    title: str
    year: int
    sequel_of: NotRequired[str]


def test_schema_for_attrs_and_typeddict() -> None:
    s = schema_for(Pet)
    assert s == {
        "type": "object",
        "description": "A pet.",
        "properties": {"name": {"type": "string", "description": "what it answers to"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    m = schema_for(Movie)
    assert m["properties"] == {"title": {"type": "string"}, "year": {"type": "integer"}, "sequel_of": {"type": ["string", "null"]}}
    assert m["required"] == ["title", "year", "sequel_of"] and strict_problems(m) == []


try:
    import pydantic
except ImportError:  # pydantic is optional: allm imports it only when given a pydantic model
    pydantic = None

needs_pydantic = pytest.mark.skipif(pydantic is None, reason="pydantic is not installed")

if pydantic is not None:

    class PAddress(pydantic.BaseModel):
        city: str
        zip: str | None = None

    class PPerson(pydantic.BaseModel):
        """A person."""

        name: str
        age: int = pydantic.Field(ge=0, description="in years")
        homes: list[PAddress]

        @pydantic.field_validator("name")
        @classmethod
        def not_blank(cls, v: str) -> str:
            if not v.strip():
                raise ValueError("name is blank")
            return v


@needs_pydantic
def test_schema_for_a_pydantic_model_is_made_strict_and_inlined() -> None:
    s = schema_for(PPerson)
    assert "$defs" not in orjson.dumps(s).decode() and "$ref" not in orjson.dumps(s).decode()
    assert strict_problems(s) == []
    home = s["properties"]["homes"]["items"]
    assert home["required"] == ["city", "zip"] and home["additionalProperties"] is False
    assert home["properties"]["zip"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert "default" not in home["properties"]["zip"]
    assert s["properties"]["age"]["minimum"] == 0 and s["properties"]["age"]["description"] == "in years"
    assert s["description"] == "A person."


@dataclasses.dataclass
class Node:
    value: int
    children: list[Node]


@dataclasses.dataclass
class Loose:
    extra: dict[str, int]


@dataclasses.dataclass
class Pair:
    both: tuple[int, str]


@dataclasses.dataclass
class Untyped:
    anything: Any


@dataclasses.dataclass
class Bare:
    items: list  # type: ignore[type-arg]


@pytest.mark.parametrize(
    ("tp", "needle"),
    [(Node, "recursive"), (Loose, "free-form mappings"), (Pair, "fixed-length tuples"), (Untyped, "cannot derive"), (Bare, "item type"), (int, "expected a dataclass")],
)
def test_types_strict_schemas_cannot_express_are_refused(tp: Any, needle: str) -> None:
    with pytest.raises(TypeError, match=needle):
        schema_for(tp)


def test_strict_problems_of_dict_schemas() -> None:
    assert strict_problems(PERSON_SCHEMA) == []
    loose = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}}, "required": ["a"]}
    assert strict_problems(loose) == [
        "$: additionalProperties is not false",
        "$.a: additionalProperties is not false",
        "$.a: not required: b",
    ]
    arr = {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "integer"}}, "additionalProperties": False}}
    assert strict_problems(arr) == ["$[]: not required: x"]


# ------------------------------------------------------------------------------ the wire mapping, per adapter, against recordings


def _req(prompt: str, **kw: Any) -> allm.Request:
    return allm.request(prompt, **kw)


def test_chat_mapping_equals_the_recorded_llama_server_requests() -> None:
    adapter = OpenAICompatible.llama_cpp("http://127.0.0.1:8088/v1")
    for name in ("d1-json-schema-nonstream", "d2-json-schema-stream", "d3-json-object-nonstream"):
        rec = load_capture(name).request
        rf = rec["response_format"]
        fmt = allm.json_schema(rf["json_schema"]["name"], rf["json_schema"]["schema"], rf["json_schema"]["strict"]) if rf["type"] == "json_schema" else allm.ResponseFormat("json_object")
        req = _req(rec["messages"][0]["content"], model=rec["model"], max_tokens=rec["max_tokens"], temperature=rec["temperature"], seed=rec["seed"], response_format=fmt)
        body = orjson.loads(adapter.encode(req, stream=bool(rec.get("stream"))).body)
        body.pop("stream_options", None)  # we also ask for usage on streams; the recorder did not
        assert body == rec, name


def test_responses_mapping_equals_the_recorded_request() -> None:
    case = load_case("openai-responses", "structured-output-json-schema")
    req = _req(case.request["input"][0]["content"], model="gpt-5-nano", response_format=allm.json_schema("response", schema_for(Person)))
    assert orjson.loads(OpenAIResponses().encode(req, stream=False).body) == case.request


def test_anthropic_mapping_equals_the_recorded_request() -> None:
    case = load_case("anthropic", "structured-output-json-schema")
    req = _req(case.request["messages"][0]["content"][0]["text"], model=case.request["model"], max_tokens=64000, response_format=allm.json_schema("Person", schema_for(Person)))
    body = orjson.loads(Anthropic().encode(req, stream=False).body)
    assert body["output_config"] == case.request["output_config"]
    assert body["messages"] == case.request["messages"] and body["max_tokens"] == case.request["max_tokens"]


def test_gemini_mapping_equals_the_recorded_request() -> None:
    case = load_case("gemini", "structured-output-response-schema")
    req = _req(case.request["contents"][0]["parts"][0]["text"], model="gemini-3-flash-preview", response_format=allm.json_schema("Person", schema_for(Person)))
    call = Gemini().encode(req, stream=False)
    assert f"{call.method} {call.url}" == case.request_line
    assert orjson.loads(call.body) == case.request


# ------------------------------------------------------------------------------ generate_object on the recorded answers, over HTTP


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve() as s:
        yield s


def _replay(server: LoopbackServer, body: bytes, content_type: str = "application/json") -> None:
    async def handler(req: Req, w: Writer) -> None:
        await w.respond(200, body, content_type=content_type)

    server.handler = handler


def test_generate_object_on_the_recorded_anthropic_answer(server: LoopbackServer) -> None:
    case = load_case("anthropic", "structured-output-json-schema")
    _replay(server, case.body)
    engine = allm.Engine(adapter=Anthropic(base_url=server.url + "/v1"), model=case.request["model"])
    got = allm.generate_object(engine, "Generate a person named John who is 30 years old", Person, api_key="k", http_streaming=False)
    assert got == Person("John", 30)
    sent = orjson.loads(server.requests[0].body)
    assert sent["output_config"] == case.request["output_config"]


def test_generate_object_on_the_recorded_gemini_answer(server: LoopbackServer) -> None:
    case = load_case("gemini", "structured-output-response-schema")
    _replay(server, case.body)
    engine = allm.Engine(adapter=Gemini(base_url=server.url + "/v1beta"), model="gemini-3-flash-preview")
    result = allm.generate_object(engine, "Generate a person named John who is 30 years old", Person, api_key="k", http_streaming=False, return_response=True)
    assert result.value == Person("John", 30) and result.name == "Person" and result.strict
    assert result.raw_text == '{"name":"John","age":30}' and result.responses == (result.response,)
    assert result.usage == result.response.usage and result.usage.input_tokens
    assert orjson.loads(server.requests[0].body)["generationConfig"] == case.request["generationConfig"]


def test_generate_object_on_the_recorded_responses_answer(server: LoopbackServer) -> None:
    case = load_case("openai-responses", "structured-output-json-schema")
    _replay(server, case.body)
    engine = allm.Engine(adapter=OpenAIResponses(base_url=server.url + "/v1"), model="gpt-5-nano")
    got = allm.generate_object(engine, "Generate a person named John who is 30 years old", Person, name="response", api_key="k", http_streaming=False)
    assert got == Person("John", 30)
    assert orjson.loads(server.requests[0].body)["text"] == case.request["text"]


def test_generate_object_on_the_recorded_llama_server_answers(server: LoopbackServer) -> None:
    rec = load_capture("d1-json-schema-nonstream").request
    schema = rec["response_format"]["json_schema"]["schema"]
    engine = allm.Engine(adapter=OpenAICompatible.llama_cpp(server.url + "/v1"), model="gemma-3-270m")
    _replay(server, load_capture("d1-json-schema-nonstream").body)
    got = allm.generate_object(engine, rec["messages"][0]["content"], schema, name="person", http_streaming=False)
    assert got == {"name": "Person", "age": 18, "city": "New York City"}
    assert orjson.loads(server.requests[0].body)["response_format"] == rec["response_format"]
    _replay(server, load_capture("d2-json-schema-stream").body, "text/event-stream")
    assert allm.generate_object(engine, rec["messages"][0]["content"], schema, name="person") == got
    # d3 was cut off at max_tokens in the middle of a string: invalid output, with the raw text kept.
    _replay(server, load_capture("d3-json-object-nonstream").body)
    with pytest.raises(InvalidOutputError) as info:
        allm.generate_object(engine, "Give me a JSON object describing a cat.", {"type": "object"}, http_streaming=False)
    err = info.value
    assert err.reason == "invalid_output" and "cut off at max_tokens" in err.message
    recorded_text = orjson.loads(load_capture("d3-json-object-nonstream").body)["choices"][0]["message"]["content"]
    assert err.raw_text == recorded_text and err.errors[0].startswith("$: not valid JSON")
    assert err.response is not None and err.response.finish_reason == "length"
    sent = orjson.loads(server.requests[-1].body)["response_format"]
    assert sent == {"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}, "strict": False}}


# ------------------------------------------------------------------------------ invalid output and the re-ask (Fake)


def test_invalid_output_is_a_typed_error_with_the_raw_text_and_errors() -> None:
    engine = fake_engine(['{"name": "John", "age": "thirty", "extra": 1}'])
    with pytest.raises(InvalidOutputError) as info:
        allm.generate_object(engine, "who?", Person)
    err = info.value
    assert isinstance(err, ValidationError) and err.reason == "invalid_output"
    assert err.raw_text == '{"name": "John", "age": "thirty", "extra": 1}'
    assert err.errors == (
        "$: Additional properties are not allowed ('extra' was unexpected)",
        "$.age: 'thirty' is not of type 'integer'",
    )
    assert "does not match the schema 'Person'" in err.message and "(and 1 more)" in err.message
    assert err.response is not None and err.response.output_text == err.raw_text


def test_reask_sends_the_errors_back_once() -> None:
    fake = Fake(scripts=[['{"name": "John"}', usage(10, 5)], ['{"name": "John", "age": 30}', usage(30, 6)]])
    engine = allm.Engine(adapter=fake, model="fake")
    result = allm.generate_object(engine, "who?", Person, reask=True, return_response=True)
    assert result.value == Person("John", 30)
    assert len(result.responses) == 2 and result.usage.input_tokens == 40 and result.usage.output_tokens == 11
    second = fake.requests[1]
    assert [m.role for m in second.messages] == ["user", "assistant", "user"]
    assert second.messages[1].text == '{"name": "John"}'
    assert "- $: 'age' is a required property" in second.messages[2].text
    assert second.response_format == fake.requests[0].response_format == allm.json_schema("Person", PERSON_SCHEMA)


def test_reask_is_off_by_default_and_happens_only_once() -> None:
    fake = Fake(scripts=[["nope"], ["still nope"], ["never asked"]])
    engine = allm.Engine(adapter=fake, model="fake")
    with pytest.raises(InvalidOutputError):
        allm.generate_object(engine, "who?", Person)
    assert fake.calls == 1
    with pytest.raises(InvalidOutputError) as info:
        allm.generate_object(engine, "who?", Person, reask=True)
    assert fake.calls == 3 and info.value.raw_text == "never asked"
    assert "after one re-ask" in info.value.message and info.value.metadata["attempts"] == 2


def test_no_text_and_code_fences() -> None:
    with pytest.raises(InvalidOutputError, match="no text"):
        allm.generate_object(fake_engine([finish("stop")]), "x", Person)
    fenced = '```json\n{"name": "Ann", "age": 3}\n```'
    assert allm.generate_object(fake_engine([fenced]), "x", Person) == Person("Ann", 3)


def test_a_failed_call_raises_its_own_error() -> None:
    with pytest.raises(AdapterError) as info:
        allm.generate_object(fake_engine([text('{"name": "Jo'), error("provider_unavailable", "overloaded")]), "x", Person)
    assert info.value.reason == "provider_unavailable"


def test_request_checks() -> None:
    with pytest.raises(ValidationError, match="already has a response_format"):
        allm.generate_object(fake_engine(["{}"]), allm.request("x", response_format=allm.ResponseFormat("json_object")), Person)
    with pytest.raises(ValidationError, match="not valid JSON Schema") as info:
        allm.generate_object(fake_engine(["{}"]), "x", {"type": "object", "properties": {"a": {"type": "strange"}}})
    assert info.value.reason == "invalid_request"
    with pytest.raises(TypeError, match="schema_or_type"):
        allm.generate_object(fake_engine(["{}"]), "x", "not a schema")  # type: ignore[call-overload]


def test_typed_values() -> None:
    answer = {
        "name": "Ann",
        "nickname": None,
        "age": 33,
        "height": 2,
        "tags": ["a", "b"],
        "scores": [1, 2],
        "home": {"city": "Paris", "country": "France"},
        "previous": [{"city": "Lyon", "country": "France"}],
        "favourite": "blue",
        "mood": "happy",
        "level": None,
        "either": "x",
        "verified": True,
    }
    got = allm.generate_object(fake_engine([orjson.dumps(answer).decode()]), "x", Profile)
    assert got == Profile("Ann", None, 33, 2.0, ["a", "b"], (1, 2), Address("Paris", "France"), [Address("Lyon", "France")], Color.BLUE, "happy", None, "x", True)
    assert isinstance(got.height, float) and isinstance(got.scores, tuple)
    pet = allm.generate_object(fake_engine(['{"name": "Rex", "age": 3}']), "x", Pet)
    assert pet == Pet("Rex", 3) and pet.legs == 4
    movie = allm.generate_object(fake_engine(['{"title": "Up", "year": 2009, "sequel_of": null}']), "x", Movie)
    assert movie == {"title": "Up", "year": 2009}  # the absent key stays absent
    raw = allm.generate_object(fake_engine(['{"a": 1}']), "x", {"type": "object", "title": "My thing!"}, return_response=True)
    assert raw.value == {"a": 1} and raw.name == "My_thing_" and raw.strict is False


@needs_pydantic
def test_pydantic_models_are_built_and_their_own_validators_apply() -> None:
    ok = '{"name": "Ann", "age": 3, "homes": [{"city": "Paris", "zip": null}]}'
    got = allm.generate_object(fake_engine([ok]), "x", PPerson)
    assert isinstance(got, PPerson) and got.homes[0].city == "Paris" and got.homes[0].zip is None
    blank = '{"name": "  ", "age": 3, "homes": []}'
    with pytest.raises(InvalidOutputError) as info:
        allm.generate_object(fake_engine([blank]), "x", PPerson)
    assert "name is blank" in info.value.message and info.value.raw_text == blank


def test_attrs_validators_refuse_output() -> None:
    @attrs.frozen
    class Even:
        n: int = attrs.field(validator=lambda _i, _a, v: (_ for _ in ()).throw(ValueError("odd")) if v % 2 else None)

    with pytest.raises(InvalidOutputError, match="Even refused the answer: ValueError: odd"):
        allm.generate_object(fake_engine(['{"n": 3}']), "x", Even)


def test_parse_object_reads_a_response_made_elsewhere() -> None:
    resp = allm.generate(fake_engine(['{"name": "Bo", "age": 1}']), allm.request("x", response_format=allm.json_schema("p", PERSON_SCHEMA)))
    assert parse_object(resp, Person) == Person("Bo", 1)
    assert parse_object(resp, PERSON_SCHEMA) == {"name": "Bo", "age": 1}


async def test_async_twin() -> None:
    fake = Fake(scripts=[["[]"], ['{"name": "Al", "age": 2}']])
    got = await allm.agenerate_object(allm.Engine(adapter=fake, model="f"), "x", Person, reask=True)
    assert got == Person("Al", 2) and fake.calls == 2
    with pytest.raises(InvalidOutputError):
        await allm.agenerate_object(fake_engine(["x"]), "x", Person)


def test_the_error_survives_pickle_and_the_codec() -> None:
    err = InvalidOutputError("bad", raw_text="{", errors=["$: not valid JSON"], response=None)
    for back in (pickle.loads(pickle.dumps(err)), InvalidOutputError.from_dict(err.to_dict())):
        assert type(back) is InvalidOutputError and back == err
        assert back.raw_text == "{" and back.errors == ("$: not valid JSON",) and back.reason == "invalid_output"
    resp = allm.Response(allm.assistant("x"), finish_reason="error", metadata={"error": err})
    assert codec.loads(codec.dumps(resp)).metadata["error"].raw_text == "{"


# OpenAI structured outputs: a declined request carries ``refusal`` instead of content
# (https://platform.openai.com/docs/guides/structured-outputs, "Refusals").
REFUSAL = "I'm sorry, I cannot assist with that request."
REFUSAL_BODY = orjson.dumps(
    {
        "id": "chatcmpl-r",
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": REFUSAL}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30},
    }
)


def _refusal_stream() -> bytes:
    chunks = [{"role": "assistant", "content": None, "refusal": None}, {"refusal": "I'm sorry, "}, {"refusal": "I cannot assist with that request."}]
    out = b""
    for d in chunks:
        out += b"data: " + orjson.dumps({"id": "chatcmpl-r", "model": "gpt-4o", "choices": [{"index": 0, "delta": d, "finish_reason": None}]}) + b"\n\n"
    out += b"data: " + orjson.dumps({"id": "chatcmpl-r", "model": "gpt-4o", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"\n\n"
    return out + b"data: [DONE]\n\n"


def test_a_refusal_is_content_filter_in_stream_and_body_alike() -> None:
    from allm.fold import fold_response
    from allm.providers import OpenAI
    from tests.conftest import feed_all

    o = OpenAI()
    call = o.encode(allm.request("x", model="gpt-4o"), stream=True)
    streamed = fold_response(feed_all(o.decoder(call), [_refusal_stream()]))
    body = fold_response(o.decode_body(o.encode(allm.request("x", model="gpt-4o"), stream=False), REFUSAL_BODY))
    for r in (streamed, body):
        assert r.output_text == REFUSAL and r.finish_reason == "content_filter" and r.raw_finish_reason == "stop"


def test_generate_object_reports_a_refusal(server: LoopbackServer) -> None:
    from allm.providers import OpenAI

    _replay(server, REFUSAL_BODY)
    engine = allm.Engine(adapter=OpenAI(base_url=server.url + "/v1"), model="gpt-4o")
    with pytest.raises(InvalidOutputError) as info:
        allm.generate_object(engine, "something unsafe", Person, api_key="sk-test-0000000", http_streaming=False)
    assert "declined" in info.value.message and info.value.raw_text == REFUSAL
