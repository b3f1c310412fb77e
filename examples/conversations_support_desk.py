"""A support desk of live conversations: tools with their own context, a persistence handler,
a watcher in another thread, an interrupt, a restart that reopens a conversation, and its
history exported as an OpenAI Chat Completions conversation and imported into another.

Run it: ``python examples/conversations_support_desk.py`` (no key, no network: the model is a Fake).
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import allm
from allm.conversations import MessageAdded, ToolGroup, TurnEnded
from allm.events import TextDelta
from allm.providers import Fake
from allm.stores import MemoryStore
from allm.testing import delay, text, tool_call

ORDER_SCHEMA = {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}


def order_status(args: dict[str, Any], ctx: allm.ToolContext) -> dict[str, Any]:
    """Reads the orders database handed to its group (never stored, never logged)."""
    return {"order_id": args["order_id"], "status": ctx.context["orders"][args["order_id"]]}


def model(request: allm.Request) -> list[Any]:
    """A scripted model: look the order up, then answer from the tool's result; stories are slow."""
    last = request.messages[-1]
    if last.role == "tool":
        return [text("Your order is "), text(json.loads(last.text)["status"] + ".")]
    if "story" in last.text:
        return [text("Once upon a time"), delay(30), text(" there was a parcel.")]
    if "order" in last.text:
        return [tool_call("order_status", {"order_id": "A-17"})]
    return [text("Glad to help.")]


class Database:
    """An event handler that keeps its own copy of every message (a real one would INSERT)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def on_message(self, conversation_id: str, message: allm.Message) -> None:
        self.rows.append((conversation_id, message.role, message.text))


def main() -> None:
    engine = allm.Engine(adapter=Fake(function=model), model="fake")
    orders = ToolGroup([allm.tool("order_status", "Status of an order", ORDER_SCHEMA, handler=order_status)],
                       context={"orders": {"A-17": "shipped"}})
    store, db = MemoryStore(), Database()

    with allm.Conversations(store=store, engine=engine, handlers=[db]) as desk:
        desk.open("ticket-1", messages=[allm.system("You are a support agent.")], tools=[orders], persist_initial=True)
        desk.open("ticket-2", tools=[orders])

        # A watcher in another thread, as a web socket would be.
        watched: list[str] = []
        updates = desk.subscribe("ticket-1")

        def watch() -> None:
            for u in updates:
                if isinstance(u, MessageAdded):
                    watched.append(f"{u.index}:{u.message.role}")
                if isinstance(u, TurnEnded) and u.message_count >= 6:
                    return

        watcher = threading.Thread(target=watch)
        watcher.start()

        reply = desk.talk("ticket-1", "Where is my order A-17?", timeout=30)
        print("ticket-1:", reply.text)
        assert reply.text == "Your order is shipped."
        assert desk.talk("ticket-1", "Thanks!", timeout=30).text == "Glad to help."
        watcher.join(30)
        assert watched == ["1:user", "2:assistant", "3:tool", "4:assistant", "5:user", "6:assistant"], watched

        # A slow answer, interrupted: the text so far is kept and marked.
        with desk.subscribe("ticket-2") as live:
            desk.send("ticket-2", "Tell me a story while I wait.")
            while not isinstance(live.get(timeout=30), TextDelta):
                pass
            desk.interrupt("ticket-2")
        cut = desk.messages("ticket-2")[-1]
        print("ticket-2 (interrupted):", cut.text, dict(cut.metadata))
        assert (cut.text, cut.metadata["interrupted"]) == ("Once upon a time", True)

        print("\n".join(f"  {i.id}: {i.status}, {i.message_count} messages" for i in desk.list()))
        assert [(i.id, i.status, i.message_count) for i in desk.list()] == [("ticket-1", "idle", 7), ("ticket-2", "idle", 2)]

    # The handler saw every message, the system prompt too (persist_initial=True).
    assert [r[1] for r in db.rows if r[0] == "ticket-1"] == ["system", "user", "assistant", "tool", "assistant", "user", "assistant"]

    # A restart: a new manager on the same store reopens the conversation by id.
    with allm.Conversations(store=store, engine=engine) as desk:
        desk.reopen("ticket-1", tools=[orders])
        assert len(desk.messages("ticket-1")) == 7
        print("after restart:", desk.talk("ticket-1", "Is order A-17 still on its way?", timeout=30).text)

        # The history as an OpenAI Chat Completions conversation, and back into a new ticket.
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ticket-1.openai.json.gz"
            out = desk.export_history("ticket-1", path, "openai_chat")
            print(f"exported: {out.message_count} messages, {out.size_bytes} bytes, {len(out.warnings)} not kept")
            back = desk.import_history(path, "ticket-1-copy", tools=[orders])
            assert back.format == "openai_chat" and back.message_count == out.message_count
            assert [m.role for m in desk.messages("ticket-1-copy")] == [m.role for m in desk.messages("ticket-1")]
            assert desk.messages("ticket-1-copy")[2].tool_calls[0].name == "order_status"
    print("ok")


if __name__ == "__main__":
    main()
