"""No key material in what a conversation stores, publishes, logs or shows.

A loopback upstream answers each turn in a way that quotes the key back: a 401 body that
quotes it, an in-stream error that quotes it after content, and a healthy answer. The key
comes per call (``api_key=``), from ``allm.keys.scope``, in the conversation's options, and
in a tool group's context. Then everything is scanned: every stored record and log item,
every update a subscriber received (repr and pickle), the errors handlers got (repr, str,
traceback), the DEBUG log of ``allm`` and ``httpx``, exported history files, and the reprs
of the manager, its sessions and infos.
"""

from __future__ import annotations

import logging
import pickle
import traceback
from pathlib import Path
from typing import Any

import orjson
import pytest

import allm
from allm.conversations import ToolGroup
from allm.conversations.storage import NAMESPACE
from allm.stores import MemoryStore
from tests.conversations.helpers import WAIT
from tests.loopback import Req, Writer, chat_chunks, serve

KEY = "sk-Qz7vW2pLx9RkT4mNbY8cHj3FdS6aGe0Ui5"


def pieces(key: str) -> list[str]:
    return [key, repr(key)[1:-1], orjson.dumps(key).decode()[1:-1]] + [key[i : i + 12] for i in range(len(key) - 11)]


def assert_clean(text: str, where: str) -> None:
    for p in pieces(KEY):
        assert p not in text, f"key material {p!r} in {where}"


def test_no_key_anywhere(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plays = iter(["401", "mid", "ok", "ok", "ok"])

    async def handler(req: Req, w: Writer) -> None:
        key = req.headers.get("authorization", "").removeprefix("Bearer ")
        play = next(plays)
        if play == "401":
            body = orjson.dumps({"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}})
            await w.respond(401, body)
            return
        await w.start_stream()
        for c in chat_chunks(["Hi ", "there"], done=False)[:2]:
            await w.chunk(c)
        if play == "mid":
            await w.chunk(b"data: " + orjson.dumps({"error": {"message": f"key {key} revoked"}}) + b"\n\n")
            await w.end_stream()
            return
        for c in chat_chunks(["Hi ", "there"])[2:]:
            await w.chunk(c)
        await w.end_stream()

    seen_errors: list[BaseException] = []

    class Handler:
        def on_error(self, conversation_id: str, error: Exception) -> None:
            seen_errors.append(error)

    def lookup(args: dict[str, Any], ctx: allm.ToolContext) -> str:
        return "ok" if ctx.context["token"] == KEY else "wrong"

    tool = allm.tool("lookup", "L", {"type": "object", "properties": {}}, handler=lookup)
    store = MemoryStore()
    updates: list[Any] = []
    with caplog.at_level(logging.DEBUG), serve(handler) as server:
        engine = allm.Engine(
            adapter=allm.providers.OpenAICompatible(base_url=server.url + "/v1"),
            model="m",
            retry=allm.RetryPolicy(max_attempts=1),
        )
        with allm.Conversations(store=store, handlers=[Handler()]) as convs:
            convs.open("c1", engine=engine, tools=[ToolGroup([tool], context={"token": KEY})], options={"api_key": KEY})
            convs.open("c2", engine=engine)
            sub1, sub2 = convs.subscribe("c1", since=0), convs.subscribe("c2", since=0)
            with pytest.raises(allm.AdapterError) as e401:
                convs.talk("c1", "one", timeout=WAIT)  # the conversation's option
            with pytest.raises(allm.AdapterError):
                convs.talk("c1", "two", api_key=KEY, timeout=WAIT)  # per call
            with allm.keys.scope(KEY):
                assert convs.talk("c2", "three", timeout=WAIT).text == "Hi there"
            assert convs.talk("c2", "four", api_key=KEY, timeout=WAIT).text == "Hi there"
            convs.export_history("c1", tmp_path / "c1.gz")
            for sub in (sub1, sub2):
                while True:
                    try:
                        updates.append(sub.get(timeout=0.2))
                    except allm.ConversationError:
                        break
            shown = repr(convs) + repr(convs.list()) + repr(convs.session("c1")) + repr(convs.session("c2"))
            shown += repr(convs._core.live["c1"].engine)
    assert e401.value.reason == "authentication_failed" and len(seen_errors) == 2
    assert len(updates) > 20
    assert_clean(shown, "reprs")
    for key in store.keys(NAMESPACE):
        record = store.get(NAMESPACE, key)
        assert record is not None
        assert_clean(record.value.decode(), f"record {key}")
        for item in store.read(NAMESPACE, key):
            assert_clean(item.decode(), f"log item of {key}")
    for u in updates:
        assert_clean(repr(u), f"update {type(u).__name__}")
        assert_clean(repr(pickle.dumps(u)), f"pickled {type(u).__name__}")
    for err in seen_errors:
        assert_clean(repr(err) + str(err) + "".join(traceback.format_exception(err)), "handler error")
    import gzip

    assert_clean(gzip.decompress((tmp_path / "c1.gz").read_bytes()).decode(), "history file")
    assert_clean(caplog.text, "log")
