"""Hosted tools the server's tests configure (``[tools] add = "tests.server.tools:add"``)."""

from __future__ import annotations

import asyncio


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def slow_echo(text: str) -> str:
    """Wait a little, then return the text."""
    await asyncio.sleep(0.01)
    return text
