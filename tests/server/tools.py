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


async def wait_forever(tag: str) -> str:
    """Wait until cancelled; then write ``tag`` to the file named by ``$SERVER_TEST_CANCELLED``."""
    import os

    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        with open(os.environ["SERVER_TEST_CANCELLED"], "w") as fh:
            fh.write(tag)
        raise
    return tag


#: The arguments of every ``counted_add`` call in this process.
COUNTED: list[tuple[int, int]] = []


def counted_add(a: int, b: int) -> int:
    """Add two integers, remembering the call in :data:`COUNTED`."""
    COUNTED.append((a, b))
    return a + b
