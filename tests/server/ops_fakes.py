"""Scripted Fake models and hosted tools for the server's operational tests, named in server
configs as ``adapter = "tests.server.ops_fakes:NAME"`` and ``tools.add = "tests.server.ops_fakes:add"``."""

from __future__ import annotations

import itertools
from typing import Any

from allm.providers import Fake
from allm.testing import text, tool_call, usage

_ids = itertools.count(1)


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def looper(**_: Any) -> Fake:
    """Calls ``add`` every turn, for ever (10 input and 5 output tokens a turn): only a limit ends it."""

    def model(req: Any) -> list[Any]:
        return [tool_call("add", {"a": 1, "b": 2}, id=f"call_{next(_ids)}"), usage(input_tokens=10, output_tokens=5)]

    return Fake(function=model)


def talker(**_: Any) -> Fake:
    """Answers ``the secret word is swordfish`` (3 input and 6 output tokens)."""

    def model(req: Any) -> list[Any]:
        return [text("the secret word "), text("is swordfish"), usage(input_tokens=3, output_tokens=6)]

    return Fake(function=model)


def weather_caller(**_: Any) -> Fake:
    """Calls ``weather__get_weather`` for Paris, then says what the tool answered."""

    def model(req: Any) -> list[Any]:
        last = req.messages[-1]
        if last.role == "tool":
            return [text(f"Tool said: {last.text}"), usage(input_tokens=20, output_tokens=8)]
        return [tool_call("weather__get_weather", {"city": "Paris"}, id=f"call_{next(_ids)}"),
                usage(input_tokens=12, output_tokens=4)]

    return Fake(function=model)
