"""A process that runs one conversation until it is killed (``tests/conversations/test_crash.py``).

``python -m tests.conversations.crash_worker STORE_URL CONVERSATION_ID``: reopens the
conversation (or opens it), then sends messages forever; every turn calls a tool and
streams with small delays. It prints one line per acknowledged message, flushed at once:
``ack <index> <JSON [role, text]>`` when a subscriber received its ``MessageAdded`` (so it
was stored), and ``sent <index>`` when ``send`` returned (the user message was stored).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson

import allm
from allm.conversations import MessageAdded, TurnEnded
from allm.providers import Fake
from allm.stores import open_store
from allm.testing import delay, text, tool_call


def model(request: allm.Request) -> list[Any]:
    last = request.messages[-1]
    if last.role == "tool":
        return [text("noted "), delay(0.004), text(last.text)]
    return [text("let me note that"), delay(0.004), tool_call("note", {"what": last.text})]


def note(args: dict[str, str]) -> str:
    time.sleep(0.003)
    return f"[{args['what']}]"


def main(url: str, conversation_id: str) -> None:
    out = sys.stdout
    engine = allm.Engine(adapter=Fake(function=model), model="fake")
    tools = [allm.tool("note", "Note it", {"type": "object", "properties": {"what": {"type": "string"}}}, handler=note)]
    with allm.Conversations(store=open_store(url), engine=engine) as convs:
        info = convs.ensure(conversation_id, tools=tools)
        sub = convs.subscribe(conversation_id)
        out.write(f"ready {info.message_count}\n")
        out.flush()
        i = info.message_count
        while True:
            index = convs.send(conversation_id, f"message {i}")
            out.write(f"sent {index}\n")
            out.flush()
            while True:
                u = sub.get(timeout=30)
                if isinstance(u, MessageAdded):
                    out.write(f"ack {u.index} {orjson.dumps([u.message.role, u.message.text]).decode()}\n")
                    out.flush()
                elif isinstance(u, TurnEnded):
                    break
            i += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
