"""Assertions about what the model was sent, with readable diffs.

::

    from allm.testing import assert_sent

    assert_sent(fake, thread=[allm.system("Be brief."), allm.user("Hi")], tools=["get_weather"], temperature=0)

A failure lists every difference at once: the thread as a line-per-message diff
(``- expected``, ``+ sent``), the tools missing and unexpected, each setting expected
and sent. :func:`explain` gives the same diff for any two allm values; the pytest plugin
shows it when ``assert a == b`` fails on allm values.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import orjson

from ..events import Event
from ..providers.fake import Fake
from ..types import ImagePart, Message, ReasoningPart, Request, TextPart, Thread, Tool, ToolCall

__all__ = ["assert_sent", "explain", "render_message", "render_thread"]


# ------------------------------------------------------------------------------ rendering


def _short(text: str, limit: int = 160) -> str:
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 4] + "...'"


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return repr(value)


def _call(c: ToolCall) -> str:
    args = _json(dict(c.arguments)) if not c.parse_error else repr(c.raw_arguments)
    return f"{c.name}#{c.id}({args})"


def _part(p: Any) -> str:
    if isinstance(p, TextPart):
        return _short(p.text)
    if isinstance(p, ImagePart):
        img = p.image
        what = img.url if img.url is not None else f"{len(img.data or b'')} bytes"
        return f"<image {img.mime_type or '?'} {what}>"
    if isinstance(p, ReasoningPart):
        return f"<reasoning {_short(p.text, 60)}{' signed' if p.signature else ''}>"
    return repr(p)


def render_message(m: Message) -> str:
    """One line for a message: ``user: 'Hi'``, ``assistant: get_weather#call_1({"city":"Paris"})``,
    ``tool get_weather#call_1: '{"temp_c":18}'`` (``(error)`` when ``is_error``)."""
    if isinstance(m.content, str):
        content = _short(m.content) if m.content or not m.tool_calls else ""
    else:
        content = " + ".join(_part(p) for p in m.content)
    calls = " + ".join(_call(c) for c in m.tool_calls)
    body = " + ".join(x for x in (content, calls) if x)
    if m.role == "tool":
        head = f"tool {m.name or ''}#{m.tool_call_id}" + (" (error)" if m.is_error else "")
    else:
        head = m.role + (f" ({m.name})" if m.name else "")
    return f"{head}: {body}"


def render_thread(messages: Iterable[Message]) -> list[str]:
    """One numbered line per message (see :func:`render_message`)."""
    return [f"[{i}] {render_message(m)}" for i, m in enumerate(messages)]


def _messages(value: Thread | Request | Iterable[Message | str]) -> tuple[Message, ...]:
    if isinstance(value, Thread):
        return value.messages
    if isinstance(value, Request):
        return value.messages
    out = []
    for m in value:
        if isinstance(m, str):
            from ..types import user

            m = user(m)
        if not isinstance(m, Message):
            raise TypeError(f"expected allm messages (or strings for user messages), got {type(m).__name__}")
        out.append(m)
    return tuple(out)


def _thread_diff(
    expected: Sequence[Message], sent: Sequence[Message], labels: tuple[str, str] = ("expected", "sent")
) -> list[str]:
    """Lines describing how two message lists differ (empty when equal)."""
    if tuple(expected) == tuple(sent):
        return []
    a, b = render_thread(expected), render_thread(sent)
    out = [line for line in difflib.ndiff(a, b) if not line.startswith("?")]
    if a == b:  # the rendering hides the difference: say which fields differ
        out = []
        for i, (x, y) in enumerate(zip(expected, sent, strict=True)):
            if x != y:
                out.append(f"[{i}] {render_message(x)}")
                out += [f"    {line}" for line in _field_lines(x, y, labels=labels)]
    return out


# ------------------------------------------------------------------------------ assert_sent


_SETTINGS = tuple(f.name for f in attrs.fields(Request) if f.name not in ("messages", "tools"))


def _request_of(sent: Any, call: int) -> tuple[Request, str]:
    if isinstance(sent, Request):
        return sent, "the request"
    requests = sent.requests if isinstance(sent, Fake) else list(sent)
    if not requests:
        raise AssertionError("the model was sent nothing: no call was made")
    try:
        req = requests[call]
    except IndexError:
        raise AssertionError(f"the model was called {len(requests)} time(s); there is no call {call}") from None
    n = call if call >= 0 else len(requests) + call
    if not isinstance(req, Request):
        raise TypeError(f"expected allm.Request values, got {type(req).__name__}")
    return req, f"call {n + 1} of {len(requests)}"


def _tools_diff(expected: Iterable[str | Tool], sent: Sequence[Tool]) -> list[str]:
    expected = list(expected)
    names = [t if isinstance(t, str) else t.name for t in expected]
    have = [t.name for t in sent]
    out = []
    missing = [n for n in names if n not in have]
    extra = [n for n in have if n not in names]
    if missing:
        out.append(f"tools: missing {missing}")
    if extra:
        out.append(f"tools: not expected but sent {extra}")
    by_name = {t.name: t for t in sent}
    for t in expected:
        if isinstance(t, Tool) and t.name in by_name and by_name[t.name] != t:
            got = by_name[t.name]
            for f in ("description", "schema", "manual", "strict", "metadata"):
                a, b = getattr(t, f), getattr(got, f)
                if a != b:
                    if isinstance(a, Mapping):
                        diff = difflib.unified_diff(_pretty(a), _pretty(b), "expected", "sent", lineterm="", n=2)
                        out.append(f"tool {t.name}: {f} differs")
                        out += [f"    {line}" for line in diff]
                    else:
                        out.append(f"tool {t.name}: {f}: expected {a!r}, sent {b!r}")
    return out


def _pretty(value: Any) -> list[str]:
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode().splitlines()
    except TypeError:
        return [repr(value)]


def _same(expected: Any, sent: Any) -> bool:
    if isinstance(expected, list) and isinstance(sent, tuple):
        expected = tuple(expected)
    return bool(expected == sent)


def assert_sent(
    sent: Fake | Request | Sequence[Request],
    *,
    call: int = -1,
    thread: Thread | Request | Iterable[Message | str] | None = None,
    tools: Iterable[str | Tool] | None = None,
    **settings: Any,
) -> None:
    """Assert what the model was sent in one call (the last by default).

    - ``sent``: a Fake (its ``requests``), a list of requests (the ``allm_requests``
      fixture), or one :class:`~allm.Request`.
    - ``call``: which call, as a list index (``0`` the first, ``-1`` the last).
    - ``thread``: the exact messages (a Thread, a Request, or messages; a string
      stands for a user message).
    - ``tools``: the tools offered: names (compared as a set) or :class:`~allm.Tool`
      values (then description, schema and flags too).
    - ``settings``: any other :class:`~allm.Request` field (``temperature=0``,
      ``max_tokens=64``, ``tool_choice="auto"``, ``response_format=...``, ``model=...``).

    Raises ``AssertionError`` listing every difference (``- expected`` / ``+ sent``
    lines for the thread), ``TypeError`` for a setting that is no Request field.
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not this function's source
    unknown = sorted(set(settings) - set(_SETTINGS))
    if unknown:
        raise TypeError(f"assert_sent() got unknown setting(s) {unknown}; Request fields are {list(_SETTINGS)}")
    req, which = _request_of(sent, call)
    problems: list[str] = []
    if thread is not None:
        lines = _thread_diff(_messages(thread), req.messages)
        if lines:
            problems.append("thread (- expected, + sent):")
            problems += [f"    {line}" for line in lines]
    if tools is not None:
        problems += _tools_diff(tools, req.tools)
    for name, value in settings.items():
        got = getattr(req, name)
        if not _same(value, got):
            problems.append(f"{name}: expected {value!r}, sent {got!r}")
    if problems:
        raise AssertionError(f"the model was not sent what was expected ({which}):\n  " + "\n  ".join(problems))


# ------------------------------------------------------------------------------ explain (assertion rewriting)


def _is_messages(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(m, Message) for m in v)


def _is_events(v: Any) -> bool:
    kinds = typing.get_args(Event)
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(e, kinds) for e in v)


def explain(left: Any, right: Any) -> list[str] | None:
    """Lines explaining why ``left == right`` failed, for allm values (threads, messages,
    message lists, requests, tools, event lists and other allm attrs values); ``None``
    when neither side is one. The plugin's ``pytest_assertrepr_compare`` returns these.
    Lines marked ``-`` are the left side, ``+`` the right one."""
    if isinstance(left, (Thread, Request)) or isinstance(right, (Thread, Request)) or _is_messages(left) or _is_messages(right):
        lines: list[str] = []
        if isinstance(left, Request) and isinstance(right, Request):
            lines += _field_lines(left, right, skip=("messages",))
        try:
            a, b = _messages(left), _messages(right)
        except TypeError:
            return None
        if isinstance(left, Thread) and isinstance(right, Thread) and left.metadata != right.metadata:
            lines.append(f"metadata: {dict(left.metadata)!r} != {dict(right.metadata)!r}")
        diff = _thread_diff(a, b, ("left", "right"))
        if diff:
            lines.append("messages (- left, + right):")
            lines += [f"  {line}" for line in diff]
        return [f"{_kind(left)} == {_kind(right)} failed", *lines]
    if isinstance(left, Message) and isinstance(right, Message):
        return [
            "Message == Message failed",
            f"- {render_message(left)}",
            f"+ {render_message(right)}",
            *_field_lines(left, right),
        ]
    if _is_events(left) and _is_events(right):
        from .script import event_types

        ta, tb = event_types(left), event_types(right)
        out = [f"{len(left)} events == {len(right)} events failed"]
        if ta != tb:
            out.append("event types (- left, + right):")
            out += [f"  {line}" for line in difflib.ndiff(ta, tb) if not line.startswith("?")]
        else:
            for i, (x, y) in enumerate(zip(left, right, strict=True)):
                if x != y:
                    out.append(f"first difference at event {i} ({type(x).__name__}):")
                    out += [f"  {line}" for line in _field_lines(x, y)]
                    break
        return out
    if type(left) is type(right) and attrs.has(type(left)) and type(left).__module__.startswith("allm."):
        return [f"{type(left).__name__} == {type(right).__name__} failed", *_field_lines(left, right)]
    return None


def _kind(v: Any) -> str:
    return type(v).__name__ if not isinstance(v, (list, tuple)) else f"{len(v)} messages"


def _field_lines(x: Any, y: Any, skip: Sequence[str] = (), labels: tuple[str, str] = ("left", "right")) -> list[str]:
    """One entry per differing field of two values of one attrs class."""
    out = []
    minus, plus = labels
    for f in attrs.fields(type(x)):
        if f.name in skip or not f.eq:
            continue
        a, b = getattr(x, f.name), getattr(y, f.name)
        if a == b:
            continue
        if isinstance(a, Message) and isinstance(b, Message):
            out += [f"{f.name}:", f"  - {render_message(a)}", f"  + {render_message(b)}"]
        elif _is_messages(a) or _is_messages(b):
            out.append(f"{f.name} (- {minus}, + {plus}):")
            out += [f"    {line}" for line in _thread_diff(tuple(a), tuple(b), labels)]
        elif isinstance(a, Mapping) and isinstance(b, Mapping) and len(repr(a)) + len(repr(b)) > 100:
            out.append(f"{f.name} (- {minus}, + {plus}):")
            out += [f"    {line}" for line in difflib.unified_diff(_pretty(dict(a)), _pretty(dict(b)), lineterm="", n=1)][2:]
        else:
            a, b = (dict(a), dict(b)) if isinstance(a, Mapping) and isinstance(b, Mapping) else (a, b)
            out.append(f"{f.name}: {minus} {a!r}, {plus} {b!r}")
    return out
