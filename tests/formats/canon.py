"""The documented normalisations of a thread that went through a format (``guides/history_formats.md``).

``canon(thread, formats)`` rewrites what a round trip through ``formats`` may change
without losing anything, so that any other difference is a loss (and must have been
reported).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from allm.types import ImagePart, Message, Part, ReasoningPart, TextPart, Thread, ToolCall


def _parts(m: Message, formats: set[str]) -> tuple[Part, ...]:
    out: list[Part] = []
    for p in m.parts:
        if type(p) is TextPart:
            if not p.text:
                continue  # empty text carries nothing
            if out and type(out[-1]) is TextPart:
                out[-1] = TextPart(out[-1].text + p.text)  # adjacent text is one text
                continue
        elif type(p) is ReasoningPart and "openai_responses" in formats:
            p = attrs.evolve(p, id=None)  # reasoning item ids are not written
        elif type(p) is ImagePart and p.detail == "auto" and "openai_responses" in formats:
            p = attrs.evolve(p, detail=None)  # Responses writes no detail as "auto"
        out.append(p)
    return tuple(out)


def _call(tc: ToolCall, formats: set[str]) -> tuple[Any, ...]:
    meta = dict(tc.metadata)
    if "openai_responses" in formats and isinstance(meta.get("openai"), dict):
        o = {k: v for k, v in meta["openai"].items() if k != "item_id"}  # item ids are not written
        meta = {k: v for k, v in meta.items() if k != "openai"} | ({"openai": o} if o else {})
    # Arguments are compared as the JSON object they are (their spacing may change);
    # unparseable text is compared as text.
    args: Any = tc.raw_arguments if tc.parse_error is not None else dict(tc.arguments)
    return (tc.id, tc.name, args, tc.parse_error is not None, meta)


def _rename_ids(msgs: list[dict[str, Any]]) -> None:
    # Every call is numbered by appearance, a repeated id too (an import names each call
    # anew); the results of an id take its calls' numbers in order (an import pairs them by
    # order), the last again for any further result; an id no call has gets one number.
    numbers: dict[str, list[str]] = {}
    n = 0
    for m in msgs:
        for c in m["tool_calls"]:
            numbers.setdefault(c[0], []).append(f"id{n}")
            c[0] = f"id{n}"
            n += 1
    answered: dict[str, int] = {}
    for m in msgs:
        i = m["tool_call_id"]
        if i is not None:
            if i not in numbers:
                numbers[i] = [f"id{n}"]
                n += 1
            k = answered.get(i, 0)
            answered[i] = k + 1
            m["tool_call_id"] = numbers[i][min(k, len(numbers[i]) - 1)]


def canon(thread: Thread, formats: Iterable[str] = (), *, rename_ids: bool = False) -> Any:
    """A comparable form of ``thread`` after the normalisations of ``formats``.

    ``rename_ids`` numbers tool-call ids by first appearance (Gemini keeps only the
    pairing of calls and results, not the ids).
    """
    fs = set(formats)
    calls: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in thread.messages:
        for tc in m.tool_calls:
            if m.role == "assistant":
                calls[tc.id] = tc.name
        name = m.name
        if m.role == "tool" and m.tool_call_id in calls and calls[m.tool_call_id] == name:
            name = None  # the name of the call answered is derived, not kept
        out.append(
            {
                "role": m.role,
                "content": _parts(m, fs),
                "tool_calls": [list(_call(tc, fs)) for tc in m.tool_calls],
                "tool_call_id": m.tool_call_id,
                "name": name,
                "is_error": m.is_error,
                "metadata": dict(m.metadata),
            }
        )
    if rename_ids:
        _rename_ids(out)
    return {"messages": out, "metadata": dict(thread.metadata)}

