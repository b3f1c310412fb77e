"""History files: gzip JSON with a format name and version; every error path is typed."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path
from typing import Any

import orjson
import pytest

import allm
from allm import formats
from allm.formats import FormatError, FormatWarning
from tests.conftest import FIXTURES
from tests.formats.canon import canon

THREAD = allm.Thread(
    (
        allm.system("You are terse."),
        allm.user([allm.TextPart("What is in this picture?"), allm.ImagePart.from_bytes(b"\x89PNG\r\n", "image/png")]),
        allm.assistant(
            [allm.ReasoningPart("Looks like a header.", "sig-1", provider="anthropic"), allm.TextPart("Let me check.")],
            [allm.ToolCall("toolu_1", "inspect", {"what": "header"}, '{"what": "header"}')],
        ),
        allm.tool_result("toolu_1", "a PNG signature"),
        allm.assistant("It is the start of a PNG file."),
    )
)


def _doc(path: Path) -> Any:
    return orjson.loads(gzip.decompress(path.read_bytes()))


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_export_then_import(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"work.{fmt}.json.gz"
    info = formats.export_history(THREAD, path, format=fmt)
    size, count = info
    assert size == path.stat().st_size == info.bytes_written
    assert count == info.message_count == 5
    doc = _doc(path)
    assert doc["format"] == fmt and doc["version"] == 1
    assert doc["payload"] == formats.to_payload(THREAD, fmt)[0]
    thread, warnings = formats.import_history(path)
    assert list(info.warnings) == warnings[: len(info.warnings)]
    if fmt == "allm":
        assert thread == THREAD and warnings == []
    else:
        assert canon(thread, (fmt,), rename_ids=fmt == "gemini") == canon(THREAD, (fmt,), rename_ids=fmt == "gemini") or warnings


def test_what_an_export_cannot_keep_is_in_the_result_the_file_and_the_import(tmp_path: Path) -> None:
    path = tmp_path / "chat.json.gz"
    info = formats.export_history(THREAD, path, format="openai_chat")
    assert [(w.kind, w.path) for w in info.warnings] == [("unsupported_content", "messages[2].content[0]")]
    assert "reasoning" in info.warnings[0].message
    assert _doc(path)["export_warnings"] == [w.to_dict() for w in info.warnings]
    thread, warnings = formats.import_history(path)
    assert warnings == list(info.warnings)
    assert thread.messages[2].reasoning == ()
    assert "bytes_written=" in repr(info) and info.format == "openai_chat"


def test_strict_export_refuses_before_writing_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "history.json.gz"
    formats.export_history(THREAD, path, format="anthropic")
    before = path.read_bytes()
    with pytest.raises(FormatError) as exc:
        formats.export_history(THREAD, path, format="openai_chat", strict=True)
    assert exc.value.reason == "unrepresentable"
    assert exc.value.warning == FormatWarning("unsupported_content", "messages[2].content[0]", exc.value.warning.message)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["history.json.gz"]


def test_a_file_that_cannot_be_written_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "a-directory"
    target.mkdir()
    with pytest.raises(OSError):
        formats.export_history(THREAD, target, format="allm")
    assert sorted(os.listdir(tmp_path)) == ["a-directory"]
    with pytest.raises(FileNotFoundError):
        formats.export_history(THREAD, tmp_path / "missing" / "h.json.gz")


def test_a_bare_recorded_request_body_imports_with_its_format(tmp_path: Path) -> None:
    body = (FIXTURES / "anthropic" / "stream-tool-result-followup" / "request.json").read_bytes()
    plain = tmp_path / "request.json"
    plain.write_bytes(body)
    packed = tmp_path / "request.json.gz"
    packed.write_bytes(gzip.compress(body))
    for p in (plain, packed):
        thread, warnings = formats.import_history(p, "anthropic")
        assert [m.role for m in thread.messages] == ["user", "assistant", "tool"]
        assert thread.messages[2].tool_call_id == thread.messages[1].tool_calls[0].id == "toolu_01MKSN7NHsBVKr7Jvw5pqCQq"
        assert [w.kind for w in warnings] == ["not_history"]
        assert "model" in warnings[0].message and "tools" in warnings[0].message
    with pytest.raises(FormatError) as exc:
        formats.import_history(plain)
    assert exc.value.reason == "unknown_format" and "format=" in exc.value.message


def test_a_bare_allm_envelope_needs_no_format_name(tmp_path: Path) -> None:
    path = tmp_path / "thread.json"
    path.write_bytes(allm.codec.dumps(THREAD))
    assert formats.import_history(path) == (THREAD, [])


def test_the_import_names_the_format_it_read(tmp_path: Path) -> None:
    formats.export_history(THREAD, tmp_path / "h.json.gz", format="gemini")
    got = formats.import_history(tmp_path / "h.json.gz")
    assert got.format == "gemini" and got.thread == got[0] and got.warnings == got[1]
    assert "format='gemini'" in repr(got)
    body = tmp_path / "body.json"
    body.write_bytes(orjson.dumps({"messages": [{"role": "user", "content": "hi"}]}))
    assert formats.import_history(body, "openai_chat").format == "openai_chat"


def test_a_file_of_the_earlier_conversation_layout_reads_as_allm(tmp_path: Path) -> None:
    doc = {"format": "allm.history", "version": 1, "conversation_id": "c", "thread": allm.codec.to_dict(THREAD)}
    path = _write(tmp_path, gzip.compress(orjson.dumps(doc)))
    got = formats.import_history(path)
    assert got == (THREAD, []) and got.format == "allm"
    assert formats.import_history(path, "allm") == (THREAD, [])


def test_metadata_json_cannot_hold_is_refused_before_writing(tmp_path: Path) -> None:
    huge = allm.Thread((allm.Message("user", "x", metadata={"n": 2**70}),))
    with pytest.raises(FormatError) as exc:
        formats.export_history(huge, tmp_path / "h.json.gz")
    assert exc.value.reason == "invalid_payload" and os.listdir(tmp_path) == []


def _write(tmp_path: Path, data: bytes, name: str = "h.json.gz") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize(
    ("data", "fmt", "reason", "words"),
    [
        (b"\x1f\x8b\x08\x00garbage", None, "invalid_file", "gzip"),
        (gzip.compress(b"{not json"), None, "invalid_file", "not JSON"),
        (gzip.compress(b'{"format": "allm", "version": 2, "payload": {}}'), None, "unsupported_version", "newer"),
        (gzip.compress(b'{"format": "allm", "version": "1", "payload": {}}'), None, "invalid_file", "version"),
        (gzip.compress(b'{"format": "allm", "version": 0, "payload": {}}'), None, "invalid_file", "version"),
        (gzip.compress(b'{"format": "markdown", "version": 1, "payload": {}}'), None, "unknown_format", "markdown"),
        (gzip.compress(b'{"format": "gemini", "version": 1, "payload": {"contents": []}}'), "anthropic", "invalid_file", "not 'anthropic'"),
        (gzip.compress(b'{"format": "gemini", "version": 1, "payload": {"contents": []}, "export_warnings": [{"kind": "nope"}]}'), None, "invalid_file", "export_warnings"),
        (gzip.compress(b'{"format": "allm", "version": 1, "payload": {"messages": []}}'), None, "invalid_payload", "not an allm thread"),
        (gzip.compress(b'{"format": "allm", "version": 1, "payload": {"allm_schema": 9, "type": "Thread", "value": {}}}'), None, "unsupported_version", "schema 9"),
        (gzip.compress(b'{"format": "allm", "version": 1, "payload": {"allm_schema": 1, "type": "Request", "value": {}}}'), None, "invalid_payload", "Thread"),
        (b'{"messages": [{"role": "user"}]}', "klingon", "unknown_format", "klingon"),
        (b'[1, 2]', "openai_chat", "invalid_payload", "messages[0]"),
        (gzip.compress(b'{"format": "allm", "version": 1, "payload": {}}'), "klingon", "unknown_format", "klingon"),
        (gzip.compress(b'{"format": "allm.history", "version": 2, "thread": {}}'), None, "unsupported_version", "newer"),
        (gzip.compress(b'{"format": "allm.history", "version": true, "thread": {}}'), None, "invalid_file", "version"),
        (gzip.compress(b'{"format": "allm.history", "version": 1}'), None, "invalid_file", "no thread"),
        (gzip.compress(b'{"format": "allm.history", "version": 1, "thread": {}}'), "gemini", "invalid_file", "not 'gemini'"),
    ],
)
def test_bad_files_are_refused_with_a_typed_error(tmp_path: Path, data: bytes, fmt: str | None, reason: str, words: str) -> None:
    with pytest.raises(FormatError) as exc:
        formats.import_history(_write(tmp_path, data), fmt)
    assert exc.value.reason == reason
    assert words in exc.value.message


def test_missing_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(FormatError) as exc:
        formats.import_history(tmp_path / "nope.json.gz")
    assert exc.value.reason == "invalid_file" and "nope.json.gz" in exc.value.message
    big = _write(tmp_path, gzip.compress(b'{"messages": [' + b'{"role": "user", "content": "x"},' * 1000 + b'{"role": "user", "content": "x"}]}'))
    with pytest.raises(FormatError) as exc:
        formats.import_history(big, "openai_chat", max_bytes=10_000)
    assert exc.value.reason == "invalid_file" and "10000 bytes" in exc.value.message
    thread, _ = formats.import_history(big, "openai_chat")
    assert len(thread) == 1001


def test_unknown_format_names_are_refused() -> None:
    with pytest.raises(FormatError) as exc:
        formats.to_payload(THREAD, "yaml")
    assert exc.value.reason == "unknown_format" and "openai_chat" in exc.value.message
    with pytest.raises(FormatError):
        formats.export_history(THREAD, "/tmp/never-written.json.gz", format="yaml")
    assert not os.path.exists("/tmp/never-written.json.gz")


def test_errors_and_warnings_are_values() -> None:
    e = FormatError("x", reason="unrepresentable", metadata={"warning": {"kind": "rewritten", "path": "p", "message": "m"}})
    again = pickle.loads(pickle.dumps(e))
    assert again == e and type(again) is FormatError and again.warning == FormatWarning("rewritten", "p", "m")
    assert isinstance(e, allm.ValidationError) and isinstance(e, ValueError)
    with pytest.raises(ValueError):
        FormatError("x", reason="nope")
    with pytest.raises(ValueError):
        FormatWarning("nope", "", "")  # type: ignore[arg-type]
    w = FormatWarning("unknown", "messages[1]", "a message with role 'wizard' is not read")
    assert str(w) == "messages[1]: a message with role 'wizard' is not read"
    assert FormatWarning.from_dict(w.to_dict()) == w
    assert pickle.loads(pickle.dumps(w)) == w


def test_convert_goes_through_a_thread() -> None:
    payload, _ = formats.to_anthropic(THREAD)
    gemini, warnings = formats.convert(payload, "anthropic", "gemini")
    assert [c["role"] for c in gemini["contents"]] == ["user", "model", "user", "model"]
    assert [w.kind for w in warnings] == ["foreign_reasoning", "rewritten"]
