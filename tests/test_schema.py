"""allm.schema: one deriver with a strict switch, jsonschema loaded lazily, cached
validators, readable error lines, and what happens without jsonschema."""

from __future__ import annotations

import dataclasses
import enum
import subprocess
import sys
import textwrap
import warnings
from collections import abc
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, Optional, TypedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import allm
from allm import schema as S
from allm import tools as T
from allm.providers import Fake
from allm.types import ToolCall

ROOT = Path(__file__).resolve().parent.parent


class Size(enum.Enum):
    S = "s"
    L = "l"


class Stop(TypedDict):
    """A stop on the way."""

    city: str
    nights: NotRequired[int]


@dataclasses.dataclass
class Trip:
    name: str


# ------------------------------------------------------------------------------ the same type, both rules


# (type, strict schema or the TypeError text, tool-argument schema or the TypeError text)
CASES: list[tuple[Any, Any, Any]] = [
    (str, {"type": "string"}, {"type": "string"}),
    (Optional[int], {"type": ["integer", "null"]}, {"type": ["integer", "null"]}),  # noqa: UP045
    (
        Literal["a", "b"] | None,
        {"type": ["string", "null"], "enum": ["a", "b", None]},
        {"anyOf": [{"type": "string", "enum": ["a", "b"]}, {"type": "null"}]},
    ),
    (Size, {"type": "string", "enum": ["s", "l"]}, {"type": "string", "enum": ["s", "l"]}),
    (Literal[1, "a"], {"type": ["integer", "string"], "enum": [1, "a"]}, {"enum": [1, "a"]}),
    (
        list[int] | None,
        {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}]},
        {"type": ["array", "null"], "items": {"type": "integer"}},
    ),
    (int | str, {"anyOf": [{"type": "integer"}, {"type": "string"}]}, {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
    (set[str], {"type": "array", "items": {"type": "string"}}, {"type": "array", "items": {"type": "string"}, "uniqueItems": True}),
    (abc.Set[int], {"type": "array", "items": {"type": "integer"}}, {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}),
    (tuple[int, ...], {"type": "array", "items": {"type": "integer"}}, {"type": "array", "items": {"type": "integer"}}),
    (
        tuple[int, str],
        "fixed-length tuples",
        {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "minItems": 2, "maxItems": 2},
    ),
    (dict[str, float], "free-form mappings", {"type": "object", "additionalProperties": {"type": "number"}}),
    (dict[str, Any], "free-form mappings", {"type": "object"}),
    (dict[int, str], "free-form mappings", "string keys"),
    (list, "list needs an item type", {"type": "array"}),
    (Any, "cannot derive", {}),
    (Annotated[int, "how many"], {"type": "integer"}, {"type": "integer", "description": "how many"}),
    (Trip, {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"], "additionalProperties": False}, "cannot describe"),
    (complex, "cannot derive", "cannot describe"),
    (
        Stop,
        {
            "type": "object",
            "description": "A stop on the way.",
            "properties": {"city": {"type": "string"}, "nights": {"type": ["integer", "null"]}},
            "required": ["city", "nights"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"city": {"type": "string"}, "nights": {"type": "integer"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    ),
]


@pytest.mark.parametrize(("tp", "strict", "loose"), CASES, ids=[repr(c[0]) for c in CASES])
def test_the_same_type_under_both_rules(tp: Any, strict: Any, loose: Any) -> None:
    for rules, expected in ((True, strict), (False, loose)):
        if isinstance(expected, str):
            with pytest.raises(TypeError, match=expected):
                S.derive(tp, strict=rules, where="f(x)")
        else:
            got = S.derive(tp, strict=rules, where="f(x)")
            assert got == expected and list(got) == list(expected), (rules, got)


def test_strict_schemas_pass_strict_problems_and_loose_ones_are_found() -> None:
    strict = S.schema_for(Stop)
    assert S.strict_problems(strict) == []
    assert S.strict_problems(S.derive(Stop, strict=False)) == ["$: not required: nights"]


def test_tool_argument_errors_name_where_the_type_is() -> None:
    class Inner(TypedDict):
        when: complex

    with pytest.raises(TypeError, match=r"^f\(x\)\.when: cannot describe <class 'complex'>"):
        S.derive(Inner, strict=False, where="f(x)")


class Loop(TypedDict):
    next: list[Loop]


def test_recursive_types_are_refused_under_both_rules() -> None:
    with pytest.raises(TypeError, match="Loop refers to itself"):
        S.derive(Loop, strict=True)
    with pytest.raises(TypeError, match=r"f\(x\)\.next: Loop refers to itself"):
        S.derive(Loop, strict=False, where="f(x)")


def test_function_tool_and_schema_for_use_the_two_rules() -> None:
    def plan(stop: Stop, size: Size | None = None) -> None: ...

    schema, _ = T.schema_from_function(plan)
    assert schema["properties"]["stop"] == S.derive(Stop, strict=False)
    assert schema["properties"]["size"] == {"anyOf": [{"type": "string", "enum": ["s", "l"]}, {"type": "null"}]}
    assert schema["required"] == ["stop"]
    assert allm.schema_for(Stop) == S.derive(Stop, strict=True) == S.schema_for(Stop)


# ------------------------------------------------------------------------------ validators and error lines


def test_validators_are_cached_by_content_and_schemas_without_json_form_still_work() -> None:
    a = S.validator({"type": "object", "properties": {"n": {"type": "integer"}}})
    b = S.validator({"properties": {"n": {"type": "integer"}}, "type": "object"})
    assert a is b
    odd = {"type": "object", "properties": {"n": {"type": "integer"}}, "x-note": object()}
    v = S.validator(odd)
    assert not v.is_valid({"n": "x"}) and v.is_valid({"n": 1})


def test_schema_problem() -> None:
    assert S.schema_problem({"type": "object"}) is None
    problem = S.schema_problem({"type": "nope"})
    assert problem is not None and "nope" in problem


def test_error_lines_in_both_styles() -> None:
    v = S.validator({"type": "array", "items": {"type": "integer"}})
    value = ["x"] * 12
    lines, more = S.error_lines(v, value, limit=3)
    # Paths sorted as text: [10] comes before [2].
    assert lines == ["$[0]: 'x' is not of type 'integer'", "$[1]: 'x' is not of type 'integer'", "$[10]: 'x' is not of type 'integer'"]
    assert more == 9
    lines, more = S.error_lines(v, value, limit=3, paths="quoted")
    # Paths sorted with indices as numbers.
    assert lines == ["at '0': 'x' is not of type 'integer'", "at '1': 'x' is not of type 'integer'", "at '2': 'x' is not of type 'integer'"]
    assert more == 9
    whole = S.validator({"type": "object", "required": ["a"]})
    assert S.error_lines(whole, {}, limit=5, paths="quoted") == (["at the arguments: 'a' is a required property"], 0)
    assert S.error_lines(whole, {"a": 1}, limit=5) == ([], 0)


# ------------------------------------------------------------------------------ without jsonschema


@pytest.fixture
def no_jsonschema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "_js_module", False)
    monkeypatch.setattr(S, "_js_missing_warned", False)


@pytest.mark.usefixtures("no_jsonschema")
def test_without_jsonschema_tool_arguments_warn_once_naming_the_extra() -> None:
    t = allm.tool("get_weather", schema={"type": "object", "properties": {"city": {"type": "string"}}})
    with pytest.warns(RuntimeWarning, match=r"pip install 'allm\[validation\]'"):
        assert T.validate_arguments(t, ToolCall("c", "get_weather", {"city": 3})) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert T.validate_arguments(t, ToolCall("c", "get_weather", {"city": 4})) is None
    assert S.jsonschema_module() is None
    with pytest.raises(ImportError, match=r"needs the jsonschema package: pip install 'allm\[validation\]'"):
        S.validator({"type": "object"})


@pytest.mark.usefixtures("no_jsonschema")
def test_without_jsonschema_generate_object_raises_before_calling() -> None:
    fake = Fake(script=['{"name": "x"}'])
    engine = allm.Engine(adapter=fake, model="fake")
    with pytest.raises(ImportError, match=r"allm\.generate_object.*pip install 'allm\[validation\]'"):
        allm.generate_object(engine, "Name a trip.", Trip)
    assert fake.calls == 0


def test_a_process_without_jsonschema(tmp_path: Path) -> None:
    """jsonschema really absent: importing allm never loads it, tools still work unchecked
    (one warning), structured output refuses clearly."""
    code = textwrap.dedent(
        """
        import sys, warnings
        from dataclasses import dataclass

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "jsonschema" or name.startswith("jsonschema."):
                    raise ImportError("blocked")
                return None

        sys.meta_path.insert(0, Block())
        import allm
        from allm import tools
        from allm.providers import Fake
        from allm.types import ToolCall
        assert "jsonschema" not in sys.modules

        @allm.function_tool
        def add(a: int, b: int) -> int:
            return a + b

        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert tools.validate_arguments(add, ToolCall("c", "add", {"a": "x"})) is None
            assert tools.validate_arguments(add, ToolCall("c", "add", {"a": "y"})) is None
        assert [str(w.message) for w in seen] == [
            "jsonschema is not installed: tool arguments are not checked against their schemas "
            "(pip install 'allm[validation]' to check them)"
        ], seen
        assert tools.validate_arguments(add, ToolCall("c", "add", {}, "{", "bad")) is not None

        @dataclass
        class Trip:
            name: str

        engine = allm.Engine(adapter=Fake(script=['{"name": "x"}']), model="fake")
        try:
            allm.generate_object(engine, "Name a trip.", Trip)
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("generate_object worked without jsonschema")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "structured output (allm.generate_object, allm.parse_object) needs the jsonschema package: "
        "pip install 'allm[validation]'"
    )


def test_importing_allm_does_not_load_jsonschema() -> None:
    code = "import sys, allm, allm.tools, allm.structured, allm.schema; print('jsonschema' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------ the quick check


_KINDS = ["object", "array", "string", "integer", "number", "boolean", "null"]
_scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from([0.0, 1.0, 1.5, -2.5]) | st.sampled_from(["", "a", "ab", "abc"])
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3), max_leaves=8)


def _schemas(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keyword = st.one_of(
        st.tuples(st.just("type"), st.sampled_from(_KINDS) | st.lists(st.sampled_from(_KINDS), min_size=1, max_size=3)),
        st.tuples(st.just("properties"), st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3)),
        st.tuples(st.just("required"), st.lists(st.sampled_from(["a", "b", "c"]), max_size=2, unique=True)),
        st.tuples(st.just("additionalProperties"), st.booleans() | inner),
        st.tuples(st.just("enum"), st.lists(_scalars, min_size=1, max_size=4)),
        st.tuples(st.just("const"), _scalars),
        st.tuples(st.just("items"), st.booleans() | inner),
        st.tuples(st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]), st.integers(-3, 3) | st.sampled_from([0.5, -1.5])),
        st.tuples(st.sampled_from(["minLength", "maxLength", "minItems", "maxItems"]), st.integers(0, 3)),
        st.tuples(st.sampled_from(["description", "title", "format"]), st.sampled_from(["x", "date-time", "email"])),
        # Keywords the quick check leaves to jsonschema.
        st.tuples(st.sampled_from(["pattern", "minProperties", "uniqueItems", "$ref"]), st.sampled_from(["^a", 1, True, "#"])),
    )
    return st.lists(keyword, max_size=4).map(dict)


_any_schemas = st.recursive(st.just({}) | st.booleans().map(lambda b: {"type": "string"} if b else {}), _schemas, max_leaves=6)


@given(_any_schemas, _values)
@settings(max_examples=1500, deadline=None)
def test_what_the_quick_check_passes_jsonschema_passes(schema: dict[str, Any], value: Any) -> None:
    if S.plainly_valid(schema, value):
        errors = [e.message for e in S.validator(schema).iter_errors(value)]
        assert errors == [], (schema, value)


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}, {"a": 1, "b": 2}),
        ({"type": "object", "properties": {"x": {"type": "number", "minimum": 0}}, "required": ["x"], "additionalProperties": False}, {"x": 2}),
        ({"type": "object", "properties": {"unit": {"enum": ["c", "f"]}, "days": {"type": ["integer", "null"]}}}, {"unit": "c", "days": None}),
        ({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2}}}, {"tags": ["a", "bc"]}),
        ({"type": "object", "properties": {"p": {"type": "object", "additionalProperties": {"type": "boolean"}}}}, {"p": {"k": True}}),
    ],
)
def test_the_quick_check_passes_plain_tool_arguments(schema: dict[str, Any], value: Any) -> None:
    assert S.plainly_valid(schema, value)


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ({"type": "object", "properties": {"a": {"type": "integer"}}}, {"a": True}),  # a bool is not an integer
        ({"type": "object", "properties": {"a": {"type": "integer"}}}, {"a": 1.0}),  # valid, but left to jsonschema
        ({"type": "object", "properties": {"a": {"enum": [1]}}}, {"a": True}),
        ({"type": "object", "required": ["a"]}, {}),
        ({"type": "object", "additionalProperties": False}, {"a": 1}),
        ({"type": "object", "properties": {"a": {"type": "string", "pattern": "^x"}}}, {"a": "x"}),  # pattern: jsonschema's
        ({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"}, {}),
        ({"type": "object", "properties": {"a": {}}}, {"a": object()}),  # not a JSON value
    ],
)
def test_the_quick_check_leaves_the_rest_to_jsonschema(schema: dict[str, Any], value: Any) -> None:
    assert not S.plainly_valid(schema, value)


def test_tool_argument_errors_read_the_same_after_the_quick_check() -> None:
    t = allm.tool(
        "f",
        schema={"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"], "additionalProperties": False},
        handler=lambda a: a,
    )
    assert T.validate_arguments(t, ToolCall("c", "f", {"n": 2})) is None
    assert T.validate_arguments(t, ToolCall("c", "f", {"n": 1.0})) is None  # jsonschema's answer: 1.0 is an integer
    err = T.validate_arguments(t, ToolCall("c", "f", {"n": 0, "m": True}))
    assert err is not None and err.message == (
        "the arguments of f do not match its schema: at the arguments: Additional properties are not allowed "
        "('m' was unexpected); at 'n': 0 is less than the minimum of 1"
    )
