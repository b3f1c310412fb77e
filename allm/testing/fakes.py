"""Fakes that show what they were asked and what they answered, and one that needs no script.

- :class:`ScriptedFake`: :class:`allm.providers.Fake` that also keeps the events of each
  call (``events[i]`` answers ``requests[i]``).
- :func:`fake`: one built from scripts (one per call), a function, or nothing (then
  :func:`auto` plays the model); :func:`fake_engine`: an engine on a plain Fake, the same way.
- :func:`auto`: a Fake function in the manner of pydantic-ai's ``TestModel``: it calls every
  tool it is offered once, with arguments made from the tool's JSON Schema, then answers
  with the tools' results as JSON (or with JSON made from the requested output schema).
- :func:`example`: a JSON value valid for a JSON Schema (what :func:`auto` sends as
  arguments).
"""

from __future__ import annotations

import threading
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from ..engine import Engine
from ..events import Event
from ..providers._fake_script import TextEntry, ToolCallEntry
from ..providers.fake import Fake
from ..types import Request

__all__ = ["ScriptedFake", "auto", "example", "fake", "fake_engine"]

_EVENT_TYPES = typing.get_args(Event)


class ScriptedFake(Fake):
    """A :class:`~allm.providers.Fake` (same arguments) that also keeps what it streamed.

    Attributes, besides the Fake's ``requests`` and ``calls``:

    - ``events``: one list of events per call, in call order; ``events[i]`` is what the
      call that received ``requests[i]`` streamed (empty for a call that failed before
      its first event).
    - ``last_request`` / ``last_events``: those of the latest call (``None`` / ``[]``
      before any).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[list[Event]] = []
        self._events_lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_events_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._events_lock = threading.RLock()

    @property
    def last_request(self) -> Request | None:
        return self.requests[-1] if self.requests else None

    @property
    def last_events(self) -> list[Event]:
        return self.events[-1] if self.events else []

    def open(self, request: Request) -> Iterator[Any]:
        log: list[Event] = []
        with self._events_lock:  # keeps events[i] beside requests[i] under concurrent calls
            try:
                source = super().open(request)
            finally:
                self.events.append(log)
        return _watch(source, log)


def _watch(source: Iterator[Any], log: list[Event]) -> Iterator[Any]:
    for item in source:
        if isinstance(item, _EVENT_TYPES):
            log.append(item)
        yield item


def fake(
    *scripts: Any,
    function: Callable[[Request], Any] | None = None,
    model: str = "fake",
    images: Sequence[Any] | None = None,
    image_scripts: Sequence[Sequence[Any]] | None = None,
) -> ScriptedFake:
    """A :class:`ScriptedFake` playing one script per call (``fake(["Hi"], [text("Again")])``;
    a string is a one-entry script), or ``function`` (request -> entries), or, given neither,
    :func:`auto`. ``images``/``image_scripts`` script image calls as on the Fake."""
    if function is not None and scripts:
        raise ValueError("fake() takes scripts or function=, not both")
    if function is None and not scripts:
        if images is not None or image_scripts is not None:
            return ScriptedFake(model=model, images=images, image_scripts=image_scripts)
        function = auto()
    if function is not None:
        return ScriptedFake(function=function, model=model, images=images, image_scripts=image_scripts)
    return ScriptedFake(scripts=list(scripts), model=model, images=images, image_scripts=image_scripts)


def fake_engine(
    *scripts: Any, model: str = "fake", function: Callable[[Request], Any] | None = None, **engine_fields: Any
) -> Engine:
    """An engine on a :class:`~allm.providers.Fake` playing one script per call
    (``fake_engine(["hi"], ["again"], tools=[...])``), or ``function``, or :func:`auto` given
    neither; ``engine_fields`` go to :class:`~allm.Engine`. The adapter is a plain Fake (its
    ``requests`` are kept; a scripted one can be stored with the engine by :mod:`allm.codec`);
    use :func:`fake` for one that also keeps the events of each call."""
    if function is not None and scripts:
        raise ValueError("fake_engine() takes scripts or function=, not both")
    if function is None and not scripts:
        function = auto()
    adapter = Fake(function=function, model=model) if function is not None else Fake(scripts=list(scripts), model=model)
    return Engine(adapter=adapter, model=model, **engine_fields)


# ------------------------------------------------------------------------------ auto


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


def auto(
    *,
    tools: str | Iterable[str] = "all",
    text: str | None = None,
    output: Any = _UNSET,
    seed: int = 0,
) -> Callable[[Request], list[Any]]:
    """A Fake function (``Fake(function=auto())``) that plays a plausible model with no script.

    Per call, looking at the turn since the last user message:

    - no tool was called yet and tools are offered (``tool_choice`` not ``"none"``): call
      each tool named by ``tools`` (``"all"``, or an iterable of names; a ``tool_choice``
      naming one tool narrows it to that one) once, in the order offered, with
      :func:`example` arguments built from its schema (``seed + i`` for the i-th tool);
    - otherwise answer: with the request's ``json_schema`` response format, ``output`` (or
      an :func:`example` of the schema) as JSON; with ``json_object``, ``output`` (or
      ``{}``); else ``text`` if given, else the tools' results as a JSON object by tool
      name (``{"get_weather": {"temp_c": 18}}``), else ``"success (no tool calls)"``.
    """
    only = None if tools == "all" else frozenset([tools] if isinstance(tools, str) else tools)

    def play(request: Request) -> list[Any]:
        msgs = request.messages
        start = max((i for i, m in enumerate(msgs) if m.role == "user"), default=-1) + 1
        turn = msgs[start:]
        offered = [t for t in request.tools if only is None or t.name in only]
        choice = request.tool_choice
        if choice not in (None, "auto", "none", "required"):
            offered = [t for t in offered if t.name == choice]
        if offered and choice != "none" and not any(m.role == "assistant" and m.tool_calls for m in turn):
            return [ToolCallEntry(t.name, example(t.schema, seed=seed + i)) for i, t in enumerate(offered)]
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_schema":
            value = output if output is not _UNSET else example(fmt.schema or {}, seed=seed)
            return [TextEntry(orjson.dumps(value).decode())]
        if fmt is not None and fmt.type == "json_object":
            return [TextEntry(orjson.dumps({} if output is _UNSET else output).decode())]
        if text is not None:
            return [TextEntry(text)]
        names = {c.id: c.name for m in turn if m.role == "assistant" for c in m.tool_calls}
        results: dict[str, Any] = {}
        for m in turn:
            if m.role == "tool":
                name = names.get(m.tool_call_id or "", m.name or m.tool_call_id or "tool")
                try:
                    results[name] = orjson.loads(m.text)
                except orjson.JSONDecodeError:
                    results[name] = m.text
        return [TextEntry(orjson.dumps(results).decode() if results else "success (no tool calls)")]

    return play


# ------------------------------------------------------------------------------ example


_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "email": "a@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
}


def example(schema: Mapping[str, Any], *, seed: int = 0) -> Any:
    """A JSON value valid for ``schema`` (JSON Schema, as tools and response formats carry it).

    Deterministic for a ``seed``. Follows ``$ref`` (``#/$defs/...``, ``#/definitions/...``),
    ``allOf``, ``anyOf``/``oneOf`` (the first non-null choice), ``const``, ``enum``,
    ``examples``, ``default``, ``format`` (date, date-time, email, uri, uuid...), string
    lengths, numeric bounds and ``multipleOf``, array lengths and ``uniqueItems``. An
    object gets its required properties only. ``pattern`` is not followed (give the
    schema an ``examples`` entry instead). Raises ``ValueError`` for a ``$ref`` it cannot
    resolve.
    """
    return _Example(schema).value(schema, seed, 0)


class _Example:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def resolve(self, ref: str) -> Mapping[str, Any]:
        if ref == "#":
            return self.root
        if not ref.startswith("#/"):
            raise ValueError(f"cannot resolve $ref {ref!r}: only local references (#/...) are followed")
        node: Any = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or part not in node:
                raise ValueError(f"cannot resolve $ref {ref!r}")
            node = node[part]
        return typing.cast(Mapping[str, Any], node)

    def value(self, s: Mapping[str, Any], seed: int, depth: int) -> Any:
        if depth > 32:
            raise ValueError("the schema nests deeper than 32 levels (a recursive $ref?)")
        if "$ref" in s:
            target = {**self.resolve(s["$ref"]), **{k: v for k, v in s.items() if k != "$ref"}}
            return self.value(target, seed, depth + 1)
        if "const" in s:
            return s["const"]
        if s.get("enum"):
            return s["enum"][seed % len(s["enum"])]
        if s.get("examples"):
            return s["examples"][0]
        if "default" in s:
            return s["default"]
        if s.get("allOf"):
            merged: dict[str, Any] = {k: v for k, v in s.items() if k != "allOf"}
            for sub in s["allOf"]:
                sub = self.resolve(sub["$ref"]) if "$ref" in sub else sub
                for k, v in sub.items():
                    if k == "properties":
                        merged["properties"] = {**merged.get("properties", {}), **v}
                    elif k == "required":
                        merged["required"] = [*merged.get("required", []), *v]
                    else:
                        merged.setdefault(k, v)
            return self.value(merged, seed, depth + 1)
        for key in ("anyOf", "oneOf"):
            if s.get(key):
                choices = s[key]
                pick = next((c for c in choices if c.get("type") != "null"), choices[0])
                return self.value(pick, seed, depth + 1)
        t = s.get("type")
        if isinstance(t, list):
            t = next((x for x in t if x != "null"), "null")
        if t is None:
            t = "object" if "properties" in s else "array" if "items" in s else "string"
        if t == "object":
            props = s.get("properties", {})
            extra = s.get("additionalProperties")
            out = {}
            for i, name in enumerate(s.get("required", [])):
                sub = props.get(name, extra if isinstance(extra, Mapping) else {})
                out[name] = self.value(sub, seed + i, depth + 1)
            return out
        if t == "array":
            lo, hi = s.get("minItems", 1), s.get("maxItems")
            n = lo if hi is None else min(max(lo, 1 if hi else 0), hi)
            items = s.get("items", {})
            prefix = s.get("prefixItems", [])
            return [self.value(prefix[i] if i < len(prefix) else items, seed + i, depth + 1) for i in range(n)]
        if t == "string":
            if s.get("format") in _FORMATS:
                return _FORMATS[s["format"]]
            lo, hi = s.get("minLength", 1), s.get("maxLength")
            n = lo if hi is None else min(max(lo, 1 if hi else 0), hi)
            return chr(ord("a") + seed % 26) * n
        if t in ("integer", "number"):
            return _number(s, seed, t == "integer")
        if t == "boolean":
            return seed % 2 == 1
        if t == "null":
            return None
        raise ValueError(f"cannot make an example of JSON Schema type {t!r}")


def _number(s: Mapping[str, Any], seed: int, integer: bool) -> int | float:
    import math

    lo, hi = s.get("minimum"), s.get("maximum")
    lo_open = hi_open = False
    x = s.get("exclusiveMinimum")
    if isinstance(x, (int, float)) and not isinstance(x, bool) and (lo is None or x >= lo):
        lo, lo_open = x, True
    x = s.get("exclusiveMaximum")
    if isinstance(x, (int, float)) and not isinstance(x, bool) and (hi is None or x <= hi):
        hi, hi_open = x, True
    if integer:  # integer bounds: closed and whole
        if lo is not None:
            lo, lo_open = (math.floor(lo) + 1 if lo_open else math.ceil(lo)), False
        if hi is not None:
            hi, hi_open = (math.ceil(hi) - 1 if hi_open else math.floor(hi)), False
    if lo is None:
        v = min(0, hi - 1 if hi_open else hi) if hi is not None else 1 + seed
    elif lo_open:
        v = (lo + hi) / 2 if hi is not None else lo + 1
    else:
        v = lo
    step = s.get("multipleOf")
    if step:
        k = math.ceil(v / step)
        if lo is not None and lo_open and k * step <= lo:
            k += 1
        if hi is not None and (k * step > hi or (hi_open and k * step >= hi)):
            k = math.floor(hi / step) - (1 if hi_open and math.floor(hi / step) * step >= hi else 0)
        v = k * step
    return int(v) if integer else float(v)
