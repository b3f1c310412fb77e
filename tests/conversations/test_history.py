"""History files: allm's gzip JSON format, round trips, and what is refused."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import allm
from allm.conversations import HistoryInfo
from allm.conversations.history import read_history, write_history
from allm.errors import ConversationError, ValidationError
from allm.testing import fake_engine, tool_call
from tests.conversations.helpers import WAIT, echo_engine


def test_export_then_import_is_lossless(convs: allm.Conversations, tmp_path: Path) -> None:
    tool = allm.tool("t", "T", {"type": "object", "properties": {}}, handler=lambda a: {"ok": True})
    convs.open("c1", engine=fake_engine([tool_call("t", {})], ["done"], tools=[tool]), messages=[allm.system("s")])
    convs.talk("c1", [allm.TextPart("look: "), allm.ImagePart(allm.Image(data=b"\x89PNG..", mime_type="image/png"))], timeout=WAIT)
    info = convs.export_history("c1", tmp_path / "c1.gz")
    assert info == HistoryInfo(str(tmp_path / "c1.gz"), (tmp_path / "c1.gz").stat().st_size, 5, "c1")
    assert info.size_bytes > 0 and (tmp_path / "c1.gz").read_bytes()[:2] == b"\x1f\x8b"
    doc = orjson.loads(gzip.decompress((tmp_path / "c1.gz").read_bytes()))
    assert (doc["format"], doc["version"], doc["conversation_id"]) == ("allm.history", 1, "c1")
    assert doc["thread"]["allm_schema"] == 1
    imported = convs.import_history(tmp_path / "c1.gz", "copy", engine=echo_engine())
    assert imported.message_count == 5 and imported.conversation_id == "copy" and imported.size_bytes == info.size_bytes
    assert convs.messages("copy") == convs.messages("c1")
    assert convs.talk("copy", "more", timeout=WAIT).text == "echo: more"


def test_export_of_a_stored_conversation_and_atomic_write(convs: allm.Conversations, tmp_path: Path) -> None:
    convs.open("c1", engine=echo_engine(), messages=[allm.system("s")])
    convs.close("c1")
    target = tmp_path / "out.gz"
    target.write_bytes(b"old")
    assert convs.export_history("c1", target).message_count == 1
    assert read_history(target) == [allm.system("s")]
    assert [p.name for p in tmp_path.iterdir()] == ["out.gz"]  # no temporary file left
    with pytest.raises(OSError):
        convs.export_history("c1", tmp_path / "no-such-dir" / "x.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["out.gz"]


def test_import_refuses_bad_files(convs: allm.Conversations, tmp_path: Path) -> None:
    cases = {
        "not-gzip.gz": b"\x1f\x8b\x08garbage",
        "not-json.gz": gzip.compress(b"{nope"),
        "other.gz": gzip.compress(b'{"format": "something else"}'),
        "newer.gz": gzip.compress(b'{"format": "allm.history", "version": 2, "thread": {}}'),
        "no-thread.gz": gzip.compress(b'{"format": "allm.history", "version": 1}'),
        "bad-thread.gz": gzip.compress(b'{"format": "allm.history", "version": 1, "thread": {"allm_schema": 1, "type": "Thread", "value": {"messages": [{"role": "robot"}]}}}'),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValidationError) as e:
            convs.import_history(tmp_path / name, "c1", engine=echo_engine())
        assert e.value.reason == "invalid_thread", name
        assert name in str(e.value)
    with pytest.raises(FileNotFoundError):
        convs.import_history(tmp_path / "missing.gz", "c1", engine=echo_engine())
    write_history(tmp_path / "ok.gz", "x", [allm.user("hi")])
    with pytest.raises(ValidationError) as e2:
        convs.import_history(tmp_path / "ok.gz", "c1", format="klingon", engine=echo_engine())
    assert e2.value.reason == "invalid_request"
    assert convs.list() == []


def test_metadata_json_cannot_hold_is_refused(convs: allm.Conversations, tmp_path: Path) -> None:
    huge = allm.Message("assistant", "x", metadata={"n": 2**70})
    with pytest.raises(ValidationError) as e:
        write_history(tmp_path / "h.gz", "c", [huge])
    assert e.value.reason == "invalid_message" and not (tmp_path / "h.gz").exists()
    with pytest.raises(ValidationError) as e2:
        convs.open("c1", engine=echo_engine(), messages=[huge])
    assert e2.value.reason == "invalid_message" and convs.get("c1") is None
    convs.open("c2", engine=echo_engine())
    with pytest.raises(ValidationError):
        convs.send("c2", allm.Message("user", "x", metadata={"n": 2**70}))
    assert convs.messages("c2") == () and convs.get("c2").status == "idle"  # type: ignore[union-attr]


def test_plain_json_is_read_too(tmp_path: Path) -> None:
    write_history(tmp_path / "h.gz", "x", [allm.user("hi")])
    (tmp_path / "h.json").write_bytes(gzip.decompress((tmp_path / "h.gz").read_bytes()))
    assert read_history(tmp_path / "h.json") == [allm.user("hi")]


def test_import_into_existing_conversations(convs: allm.Conversations, tmp_path: Path) -> None:
    write_history(tmp_path / "h.gz", "x", [allm.system("imported")])
    convs.open("live", engine=echo_engine(pause=0.3))
    with pytest.raises(ConversationError) as e:
        convs.import_history(tmp_path / "h.gz", "live")
    assert e.value.reason == "already_exists"
    convs.send("live", "busy now")
    with pytest.raises(ConversationError) as e:
        convs.import_history(tmp_path / "h.gz", "live", replace=True)
    assert e.value.reason == "busy"
    convs.wait("live", timeout=WAIT)
    sub = convs.subscribe("live")
    convs.import_history(tmp_path / "h.gz", "live", replace=True)
    assert [m.text for m in convs.messages("live")] == ["imported"]
    assert list(sub) == []  # subscriptions of a replaced history end
    convs.open("stored", engine=echo_engine())
    convs.close("stored")
    with pytest.raises(ConversationError) as e:
        convs.import_history(tmp_path / "h.gz", "stored")
    assert e.value.reason == "already_exists"
    convs.import_history(tmp_path / "h.gz", "stored", replace=True, engine=echo_engine())
    assert convs.get("stored") is not None and [m.text for m in convs.messages("stored")] == ["imported"]


texts = st.text(max_size=40)
messages = st.lists(
    st.one_of(
        texts.map(allm.user),
        texts.map(allm.system),
        texts.map(lambda t: allm.assistant(t, [allm.ToolCall("call_1", "f", {"x": t})])),
        st.builds(lambda t, e: allm.tool_result("call_1", t, name="f", is_error=e), texts, st.booleans()),
        st.builds(lambda t, d: allm.Message("assistant", t, metadata={"interrupted": True, "n": d}), texts, st.integers(-(2**63), 2**64 - 1)),
    ),
    max_size=12,
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msgs=messages)
def test_write_then_read_is_lossless(tmp_path: Path, msgs: list[allm.Message]) -> None:
    info = write_history(tmp_path / "p.gz", "c", msgs)
    assert read_history(tmp_path / "p.gz") == msgs
    assert info.message_count == len(msgs) and info.size_bytes == (tmp_path / "p.gz").stat().st_size
