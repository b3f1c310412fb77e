"""Scripted Fake models for the server's tests, named in server configs as ``adapter = "tests.server.fakes:NAME"``."""

from __future__ import annotations

from typing import Any

from allm.providers import Fake
from allm.testing import auto, delay, reasoning, text, usage


def _words(req: Any) -> int:
    return sum(len(m.text.split()) + 1 for m in req.messages)


def suite(**_: Any) -> Fake:
    """Calls every offered tool once, then answers; counts one token per word."""
    play = auto(text="Hello there, friend! 1 2 3 4 5")

    def model(req: Any) -> list[Any]:
        return [*play(req), usage(input_tokens=_words(req), output_tokens=7, cached_input_tokens=0, reasoning_tokens=0)]

    return Fake(function=model)


def thinker(**_: Any) -> Fake:
    """Reasons, then echoes the last user message."""

    def model(req: Any) -> list[Any]:
        last = req.messages[-1].text if req.messages else ""
        return [reasoning("thinking it over"), text(f"you said: {last}"),
                usage(input_tokens=_words(req), output_tokens=3, reasoning_tokens=2)]

    return Fake(function=model)


def echo(**_: Any) -> Fake:
    """Echoes the whole conversation's user texts, joined by ' | ' (to see continuations)."""

    def model(req: Any) -> list[Any]:
        said = [m.text for m in req.messages if m.role == "user"]
        return [text(" | ".join(said))]

    return Fake(function=model)


def slow(**_: Any) -> Fake:
    """Starts answering, then waits 30 s (to cancel it)."""
    return Fake(function=lambda req: [text("starting"), delay(30.0), text("never")])


def drip(**_: Any) -> Fake:
    """Five words, 20 ms apart."""
    entries = [x for w in ("one ", "two ", "three ", "four ", "five") for x in (text(w), delay(0.02))]
    return Fake(function=lambda req: entries)


def ticker(**_: Any) -> Fake:
    """Twenty numbered words, 60 ms apart (about 1.2 s: long enough to watch from elsewhere)."""
    entries = [x for i in range(20) for x in (text(f"w{i} "), delay(0.06))]
    return Fake(function=lambda req: entries)


def breaks(**_: Any) -> Fake:
    """Starts answering, then the provider fails mid-stream."""
    from allm.testing import error

    return Fake(function=lambda req: [text("half"), error("provider_unavailable", "the upstream went away")])


def triple(**_: Any) -> Fake:
    """Calls ``add`` three times in one turn, then answers."""
    from allm.testing import tool_call

    def model(req: Any) -> list[Any]:
        if any(m.role == "tool" for m in req.messages):
            return [text("added")]
        return [tool_call("add", {"a": i, "b": 1}, id=f"call_{i}") for i in range(3)]

    return Fake(function=model)


def summariser(**_: Any) -> Fake:
    """Answers a compaction request (its system message starts "You compact") with SUMMARY,
    anything else with "ok"; the requests are kept on ``.requests``."""

    def model(req: Any) -> list[Any]:
        if req.messages and req.messages[0].role == "system" and req.messages[0].text.startswith("You compact"):
            return [text("SUMMARY"), usage(input_tokens=40, output_tokens=3)]
        return [text("ok")]

    return Fake(function=model)
