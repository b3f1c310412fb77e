"""Print the fault x adapter table of ``guides/errors_and_retries.md`` from real runs.

    /work/main/.venv/bin/python -m tests.fault_table

Runs every fault of ``tests/test_faults.py`` against every adapter (sync and async),
checks it exactly as the tests do, and prints one Markdown row per fault: what the
caller saw (the same for every adapter, or the differences) and the slowest elapsed
time over the ten runs.
"""

from __future__ import annotations

import asyncio

from allm import _transport
from allm.events import Error
from tests.adapters import WIRE_NAMES, WIRES
from tests.loopback import serve
from tests.test_faults import CUTS, FAULTS, Ctx, Fault, Outcome, run_async, run_sync

SHORT = {"openai_chat": "OpenAI Chat", "openai_responses": "Responses", "anthropic": "Anthropic", "gemini": "Gemini", "openai_compatible": "compatible"}


def describe(o: Outcome) -> str:
    retried = ""
    if o.retries:
        reasons = sorted({r.reason for r in o.retries})
        retried = f"retried x{len(o.retries)} ({', '.join(reasons)}), then "
    if o.raised is not None:
        return f"{retried}raised `{o.raised.reason}`"
    last = o.events[-1] if o.events else None
    if isinstance(last, Error):
        return f"{retried}partial output kept, `Error` event `{last.error.reason}`, finish_reason=error"
    return f"{retried}success, identical to the healthy decode"


def run_one(f: Fault, wire: str, asynchronous: bool) -> tuple[str, float]:
    with serve() as server:
        ctx = Ctx(WIRES[wire], CUTS[wire], server)
        server.handler = f.handler(ctx)
        engine = ctx.wire.engine(server.url)
        if asynchronous:

            async def go() -> Outcome:
                o = await run_async(engine, timeouts=f.timeouts, retry=f.retry)
                await _transport.aclose()
                return o

            o = asyncio.run(go())
        else:
            o = run_sync(engine, timeouts=f.timeouts, retry=f.retry)
        f.check(o, ctx)  # the same assertions as the tests
        return describe(o), o.elapsed


def main() -> None:
    print("| fault | " + " | ".join(SHORT[w] for w in WIRE_NAMES) + " | outcome (sync and async) | slowest |")
    print("|---|" + "---|" * len(WIRE_NAMES) + "---|---|")
    for f in FAULTS:
        outcomes: dict[str, set[str]] = {}
        slowest = 0.0
        for wire in WIRE_NAMES:
            for asynchronous in (False, True):
                text, elapsed = run_one(f, wire, asynchronous)
                outcomes.setdefault(text, set()).add(wire)
                slowest = max(slowest, elapsed)
        marks = " | ".join("pass" for _ in WIRE_NAMES)
        if len(outcomes) == 1:
            outcome = next(iter(outcomes))
        else:
            outcome = "; ".join(f"{', '.join(SHORT[w] for w in sorted(ws))}: {t}" for t, ws in outcomes.items())
        print(f"| {f.name.replace('_', ' ')} | {marks} | {outcome} | {slowest:.2f} s |")


if __name__ == "__main__":
    main()
