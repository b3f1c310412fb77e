"""One process of the two-process rate-limit test (run by test_rate_limit.py).

Usage: python -m tests.middleware.rate_worker REDIS_URL LIMIT CHATS READY_FILE GO_FILE

Signals it is ready, waits for the go file (so both processes count at once), then runs
CHATS one-call chats for the tenant ``acme`` through a RateLimit of LIMIT calls per hour kept
in Redis, half with the sync driver and half with the async one, and prints a JSON line:
its pid and how each chat ended.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import orjson

import allm
from allm import middleware as mw
from allm.testing import fake_engine, text


def main() -> None:
    url, limit, chats, ready, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
    limits = mw.RedisLimits(url)
    rate = mw.RateLimit(limit, 3600, key="tenant", limits=limits)
    engine = fake_engine(*[[text(f"answer {i}")] for i in range(chats)], middleware=[rate])
    ready.write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not go.exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go file")
        time.sleep(0.005)
    ends: list[str] = []
    retry_after: list[float] = []
    for i in range(chats):
        if i % 2:
            result = asyncio.run(allm.achat(engine, "hi", context={"tenant": "acme"}))
        else:
            result = allm.chat(engine, "hi", context={"tenant": "acme"})
        ends.append(result.halted_reason)
        if result.halted_reason == "rate_limit":
            retry_after.append(result.metadata["stopped_by"]["retry_after"])
    limits.close()
    print(orjson.dumps({"pid": os.getpid(), "ends": ends, "calls": engine.adapter.calls, "retry_after": retry_after}).decode())


if __name__ == "__main__":
    main()
