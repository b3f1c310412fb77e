"""History files of conversations: every format of allm.formats, the corpus's recorded
conversations imported into live conversations, round trips, and what is refused."""

from __future__ import annotations

import gzip
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import allm
from allm import formats
from allm.conversations import HistoryInfo
from allm.conversations.history import write_history
from allm.errors import ConversationError, ValidationError
from allm.formats import FormatError
from allm.testing import fake_engine, tool_call
from tests.conversations.helpers import WAIT, echo_engine
from tests.formats.corpus import Conversation
from tests.formats.test_corpus import GOOD

REASONING = allm.ReasoningPart("Check the tool first.", "sig-1", provider="anthropic")


def read_history(path: Path, format: str | None = None) -> list[allm.Message]:
    thread, warnings = formats.import_history(path, format)
    assert warnings == []
    return list(thread.messages)


def test_export_then_import_is_lossless(convs: allm.Conversations, tmp_path: Path) -> None:
    tool = allm.tool("t", "T", {"type": "object", "properties": {}}, handler=lambda a: {"ok": True})
    convs.open("c1", engine=fake_engine([tool_call("t", {})], ["done"], tools=[tool]), messages=[allm.system("s")])
    convs.talk("c1", [allm.TextPart("look: "), allm.ImagePart(allm.Image(data=b"\x89PNG..", mime_type="image/png"))], timeout=WAIT)
    info = convs.export_history("c1", tmp_path / "c1.gz")
    assert info == HistoryInfo(str(tmp_path / "c1.gz"), (tmp_path / "c1.gz").stat().st_size, 5, "c1", "allm", ())
    assert info.size_bytes > 0 and (tmp_path / "c1.gz").read_bytes()[:2] == b"\x1f\x8b"
    doc = orjson.loads(gzip.decompress((tmp_path / "c1.gz").read_bytes()))
    assert (doc["format"], doc["version"]) == ("allm", formats.FILE_VERSION)
    assert doc["payload"]["allm_schema"] == 1
    imported = convs.import_history(tmp_path / "c1.gz", "copy", engine=echo_engine())
    assert imported == HistoryInfo(str(tmp_path / "c1.gz"), info.size_bytes, 5, "copy", "allm", ())
    assert convs.messages("copy") == convs.messages("c1")
    assert convs.talk("copy", "more", timeout=WAIT).text == "echo: more"


def _tool_history() -> list[allm.Message]:
    return [
        allm.system("You are terse."),
        allm.user([allm.TextPart("What is this?"), allm.ImagePart.from_bytes(b"\x89PNG\r\n", "image/png")]),
        allm.assistant([REASONING, allm.TextPart("Let me look.")], [allm.ToolCall("toolu_1", "inspect", {"what": "it"}, '{"what": "it"}')]),
        allm.tool_result("toolu_1", "a PNG signature", name="inspect"),
        allm.assistant("The start of a PNG file."),
    ]


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_export_and_import_in_every_format(convs: allm.Conversations, tmp_path: Path, fmt: str) -> None:
    """A conversation with an image, reasoning, a tool call and its result, through each format's file."""
    convs.open("c1", engine=echo_engine(), messages=_tool_history())
    path = tmp_path / f"c1.{fmt}.json.gz"
    info = convs.export_history("c1", path, fmt)
    doc = orjson.loads(gzip.decompress(path.read_bytes()))
    assert (doc["format"], doc["version"]) == (fmt, formats.FILE_VERSION)
    expected, lost = formats.to_payload(allm.Thread(tuple(_tool_history())), fmt)
    assert doc["payload"] == expected
    assert (info.format, info.message_count, info.size_bytes) == (fmt, 5, path.stat().st_size)
    assert list(info.warnings) == lost  # what the format cannot keep is reported, and stored in the file
    assert doc.get("export_warnings", []) == [w.to_dict() for w in lost]
    back = convs.import_history(path, "c2", engine=echo_engine())
    assert back.format == fmt and back.message_count == len(convs.messages("c2"))
    assert list(back.warnings[: len(lost)]) == lost  # the export's losses come back first
    want, _ = formats.from_payload(expected, fmt)
    assert convs.messages("c2") == want.messages
    roles = [m.role for m in convs.messages("c2")]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    calls = [c.name for m in convs.messages("c2") for c in m.tool_calls]
    assert calls == ["inspect"]
    assert any(isinstance(p, allm.ImagePart) for p in convs.messages("c2")[1].parts)
    if fmt in ("allm", "anthropic"):  # the formats that carry anthropic thinking with its signature
        assert REASONING in convs.messages("c2")[2].parts and lost == []
    else:
        assert not any(isinstance(p, allm.ReasoningPart) for p in convs.messages("c2")[2].parts)
        assert {w.kind for w in lost} >= {"foreign_reasoning"} or {w.kind for w in lost} >= {"unsupported_content"}
    assert convs.talk("c2", "go on", timeout=WAIT).text == "echo: go on"


def test_strict_export_and_import_refuse_losses(convs: allm.Conversations, tmp_path: Path) -> None:
    convs.open("c1", engine=echo_engine(), messages=_tool_history())
    with pytest.raises(FormatError) as e:
        convs.export_history("c1", tmp_path / "x.gz", "openai_chat", strict=True)
    assert e.value.reason == "unrepresentable" and not (tmp_path / "x.gz").exists()
    (tmp_path / "odd.json").write_bytes(orjson.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]}))
    with pytest.raises(FormatError) as e:
        convs.import_history(tmp_path / "odd.json", "c2", "openai_chat", strict=True, engine=echo_engine())
    assert e.value.reason == "unrepresentable" and convs.get("c2") is None
    info = convs.import_history(tmp_path / "odd.json", "c2", "openai_chat", engine=echo_engine())
    assert [w.kind for w in info.warnings] == ["unknown"] and [m.text for m in convs.messages("c2")] == ["hi"]


BY_FORMAT: dict[str, list[Conversation]] = defaultdict(list)
for _c in GOOD:
    BY_FORMAT[_c.format].append(_c)


@pytest.mark.parametrize("fmt", sorted(BY_FORMAT))
def test_every_recorded_conversation_imports_into_a_conversation(convs: allm.Conversations, tmp_path: Path, fmt: str) -> None:
    """Each recorded request body of the corpus (tests/fixtures), as a bare JSON file (gzip
    or not) given its format, becomes a live conversation holding what allm.formats reads."""
    for n, conv in enumerate(BY_FORMAT[fmt]):
        raw = orjson.dumps(conv.payload)
        path = tmp_path / (f"{n}.json.gz" if n % 2 else f"{n}.json")
        path.write_bytes(gzip.compress(raw) if n % 2 else raw)
        want, warnings = formats.from_payload(conv.payload, fmt)
        cid = f"{fmt}-{n}"
        info = convs.import_history(path, cid, fmt, engine=echo_engine())
        assert (info.format, info.message_count, info.conversation_id) == (fmt, len(want.messages), cid), conv.id
        assert list(info.warnings) == warnings, conv.id  # e.g. the request's model and sampler fields: not_history
        assert convs.messages(cid) == want.messages, conv.id
        exported = convs.export_history(cid, tmp_path / f"{cid}.out.gz", fmt)
        assert exported.warnings == (), conv.id
        doc = orjson.loads(gzip.decompress((tmp_path / f"{cid}.out.gz").read_bytes()))
        assert doc["payload"] == formats.to_payload(want, fmt)[0], conv.id  # what allm.formats writes
        convs.close(cid)


def test_a_file_of_the_earlier_layout_is_still_read(convs: allm.Conversations, tmp_path: Path) -> None:
    doc = {
        "format": "allm.history",
        "version": 1,
        "conversation_id": "old",
        "thread": allm.codec.to_dict(allm.Thread((allm.system("s"), allm.user("hi")))),
    }
    (tmp_path / "old.gz").write_bytes(gzip.compress(orjson.dumps(doc)))
    info = convs.import_history(tmp_path / "old.gz", "old", engine=echo_engine())
    assert info.format == "allm" and [m.text for m in convs.messages("old")] == ["s", "hi"]
    with pytest.raises(FormatError) as e:
        convs.import_history(tmp_path / "old.gz", "other", "gemini", engine=echo_engine())
    assert e.value.reason == "invalid_file"


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
    with pytest.raises(FormatError) as e:
        convs.export_history("c1", tmp_path / "k.gz", "klingon")
    assert e.value.reason == "unknown_format"
    with pytest.raises(ConversationError) as e2:
        convs.export_history("nobody", tmp_path / "n.gz")
    assert e2.value.reason == "unknown_conversation"


def test_import_refuses_bad_files(convs: allm.Conversations, tmp_path: Path) -> None:
    cases = {
        "not-gzip.gz": (b"\x1f\x8b\x08garbage", "invalid_file"),
        "not-json.gz": (gzip.compress(b"{nope"), "invalid_file"),
        "bare.gz": (gzip.compress(b'{"format": "something else"}'), "unknown_format"),
        "newer.gz": (gzip.compress(b'{"format": "allm", "version": 2, "payload": {}}'), "unsupported_version"),
        "newer-old.gz": (gzip.compress(b'{"format": "allm.history", "version": 2, "thread": {}}'), "unsupported_version"),
        "no-thread.gz": (gzip.compress(b'{"format": "allm.history", "version": 1}'), "invalid_file"),
        "bad-thread.gz": (
            gzip.compress(b'{"format": "allm", "version": 1, "payload": {"allm_schema": 1, "type": "Thread", "value": {"messages": [{"role": "robot"}]}}}'),
            "invalid_payload",
        ),
        "missing.gz": (None, "invalid_file"),
    }
    for name, (data, reason) in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(FormatError) as e:
            convs.import_history(tmp_path / name, "c1", engine=echo_engine())
        assert e.value.reason == reason, name
    write_history(tmp_path / "ok.gz", "x", [allm.user("hi")])
    with pytest.raises(FormatError) as e2:
        convs.import_history(tmp_path / "ok.gz", "c1", format="klingon", engine=echo_engine())
    assert e2.value.reason == "unknown_format"
    with pytest.raises(FormatError) as e2:
        convs.import_history(tmp_path / "ok.gz", "c1", format="anthropic", engine=echo_engine())
    assert e2.value.reason == "invalid_file"  # the file names another format
    assert convs.list() == []


def test_metadata_json_cannot_hold_is_refused(convs: allm.Conversations, tmp_path: Path) -> None:
    huge = allm.Message("assistant", "x", metadata={"n": 2**70})
    with pytest.raises(ValidationError) as e:
        write_history(tmp_path / "h.gz", "c", [huge])
    assert e.value.reason == "invalid_payload" and not (tmp_path / "h.gz").exists()
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


PAIRS = [(a, b) for a in formats.FORMATS for b in formats.FORMATS]


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_a_conversation_survives_files_of_every_format_pair(tmp_path: Path, a: str, b: str) -> None:
    """hypothesis: what every format holds, opened as a conversation, exported as A, imported,
    exported as B, imported: the same conversation (up to the documented normalisations)."""
    from tests import strategies as S
    from tests.formats.canon import canon

    with allm.Conversations(engine=echo_engine()) as convs:
        n = iter(range(10_000))

        @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(thread=S.portable_threads)
        def check(thread: allm.Thread) -> None:
            k = next(n)
            convs.open(f"o{k}", messages=thread.messages)
            first = convs.export_history(f"o{k}", tmp_path / f"{k}.a.gz", a)
            convs.import_history(first.path, f"a{k}")
            second = convs.export_history(f"a{k}", tmp_path / f"{k}.b.gz", b)
            back = convs.import_history(second.path, f"b{k}")
            assert [w for w in (*first.warnings, *second.warnings, *back.warnings) if not _ids_note(w)] == []
            gemini = "gemini" in (a, b)
            got = allm.Thread(convs.messages(f"b{k}"))
            assert canon(got, (a, b), rename_ids=gemini) == canon(thread, (a, b), rename_ids=gemini)
            for cid in (f"o{k}", f"a{k}", f"b{k}"):
                convs.close(cid, delete=True)

        check()


def _ids_note(w: formats.FormatWarning) -> bool:
    return w.kind == "rewritten" and w.path == "" and "tool-call ids" in w.message
