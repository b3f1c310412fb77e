"""A conversation survives ``kill -9``: with the SQLite and the Redis store, a process running
a conversation is killed at several points of its turns, and a new process reopens it by id
with every acknowledged message in place and a history that is a valid thread.

The worker (``crash_worker.py``) prints each message it was told about (a ``MessageAdded``
reached its subscriber, or ``send`` returned). The test kills it after a few of those, at
varying moments (mid-stream, mid-tool, between steps), starts the next worker on the same
store (which reopens the conversation and goes on), and at the end reopens it here.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson

import allm
from allm.stores import open_store
from tests.conversations.helpers import echo_engine

ROOT = Path(__file__).parent.parent.parent
ROUNDS = 4


def run_until_killed(url: str, cid: str, acks_wanted: int, extra_lines: int) -> tuple[list[tuple[int, str, str]], list[int], int]:
    """Start a worker, kill -9 it after ``acks_wanted`` acknowledgements (plus ``extra_lines``
    lines, to vary the moment); every line it wrote before dying is read."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.conversations.crash_worker", url, cid],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env, text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    acks: list[tuple[int, str, str]] = []
    sent: list[int] = []
    ready = -1
    killed = False
    countdown = extra_lines
    while True:
        line = lines.get(timeout=60)
        if line is None:
            break
        word, _, rest = line.strip().partition(" ")
        if word == "ready":
            ready = int(rest)
        elif word == "ack":
            index, _, payload = rest.partition(" ")
            role, text = orjson.loads(payload)
            acks.append((int(index), role, text))
        elif word == "sent":
            sent.append(int(rest))
        if not killed and len(acks) >= acks_wanted:
            countdown -= 1
            if countdown < 0:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
    assert proc.wait(30) == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    return acks, sent, ready


def assert_valid_thread(messages: tuple[allm.Message, ...]) -> None:
    """Every tool call is answered right after its message; no tool result answers nothing."""
    i = 0
    while i < len(messages):
        m = messages[i]
        if m.role == "assistant" and m.tool_calls:
            answers = [x.tool_call_id for x in messages[i + 1 : i + 1 + len(m.tool_calls)]]
            assert sorted(answers, key=str) == sorted((c.id for c in m.tool_calls), key=str), (i, m)
            i += 1 + len(m.tool_calls)
            continue
        assert m.role != "tool", (i, m)
        i += 1


def crash_and_reopen(url: str) -> None:
    acknowledged: dict[int, tuple[str, str]] = {}
    for round_ in range(ROUNDS):
        acks, sent, ready = run_until_killed(url, "c1", acks_wanted=6, extra_lines=round_ * 3 + 1)
        assert ready >= len(acknowledged)  # the worker reopened everything acknowledged before
        for index, role, text in acks:
            assert acknowledged.setdefault(index, (role, text)) == (role, text)
        assert set(sent) <= set(acknowledged)
    store = open_store(url)
    with allm.Conversations(store=store) as convs:
        convs.reopen("c1", engine=echo_engine())
        messages = convs.messages("c1")
        for index, (role, text) in acknowledged.items():
            assert (messages[index].role, messages[index].text) == (role, text), index
        assert len(messages) >= max(acknowledged) + 1
        assert_valid_thread(messages)
        assert convs.session("c1").status in ("idle", "completed")
        assert convs.talk("c1", "still there?", timeout=30).text == "echo: still there?"
    store.close()


def test_kill_9_then_reopen_from_sqlite(sqlite_url: str) -> None:
    crash_and_reopen(sqlite_url)


def test_kill_9_then_reopen_from_redis(redis_url: str) -> None:
    crash_and_reopen(redis_url)
