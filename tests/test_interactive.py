"""``allm chat -i`` driven as a person drives it: in a real terminal (tmux), typing with
``send-keys`` and reading the screen with ``capture-pane``.

Each test runs its own tmux server (a private socket) and its own data directory
(``ALLM_DATA_DIR``), so sessions are stored in a fresh SQLite file and survive from one run
of the program to the next exactly as they would for a user.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from allm import formats
from allm.interactive import Command, parse_line

ROOT = Path(__file__).parent.parent
PROFILES = ROOT / "tests" / "fixtures" / "profiles" / "profiles.toml"
WAIT = 120.0  # seconds: generous, the machine is shared (a person would wait too)


def _tmux_or_skip() -> str:
    path = shutil.which("tmux")
    if path is None:
        if os.environ.get("ALLM_REQUIRE_LIVE") == "1":
            pytest.fail("tmux is not installed (apt-get install -y --no-install-recommends tmux)")
        pytest.skip("tmux is not installed")
    return path


class Screen:
    """One program in a detached tmux session on a private server."""

    def __init__(self, tmux: str, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.tmux = tmux
        self.socket = f"allm-test-{uuid.uuid4().hex[:10]}"
        self.name = "t"
        self.env = env
        self.cwd = cwd
        self.start(command)

    def _run(self, *args: str, check: bool = True) -> str:
        r = subprocess.run([self.tmux, "-L", self.socket, *args], capture_output=True, text=True, env=self.env, cwd=self.cwd, timeout=30)
        if check and r.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)} failed: {r.stderr}")
        return r.stdout

    def start(self, command: list[str]) -> None:
        # The shell prints the program's exit status when it ends: what the person sees.
        cmd = " ".join(_quote(c) for c in command) + '; echo "[exit $?]"'
        self._run("new-session", "-d", "-s", self.name, "-x", "160", "-y", "50", cmd)
        self._run("set-option", "-t", self.name, "remain-on-exit", "on")
        self._run("set-option", "-t", self.name, "history-limit", "5000")

    def keys(self, *keys: str) -> None:
        """Keys as tmux names them (``Enter``, ``C-c``, ``C-d``)."""
        self._run("send-keys", "-t", self.name, *keys)

    def type(self, line: str) -> None:
        """Type ``line`` and press Enter."""
        self._run("send-keys", "-t", self.name, "-l", line)
        self._run("send-keys", "-t", self.name, "Enter")

    def text(self) -> str:
        """Everything the program has shown (scrollback included), wrapped lines joined."""
        return self._run("capture-pane", "-p", "-J", "-t", self.name, "-S", "-5000").rstrip()

    def wait_for(self, what: str | Callable[[str], bool], timeout: float = WAIT) -> str:
        """Wait until the screen contains ``what`` (a regex) or satisfies it; return the screen."""
        end = time.monotonic() + timeout
        test = what if callable(what) else (lambda s: re.search(what, s) is not None)  # type: ignore[arg-type]
        screen = ""
        while time.monotonic() < end:
            screen = self.text()
            if test(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"waited {timeout} s for {what!r}; the screen shows:\n{screen}")

    def dead(self) -> bool:
        return self._run("display-message", "-p", "-t", self.name, "#{pane_dead}").strip() == "1"

    def exit_status(self, timeout: float = 60) -> str:
        """The program's exit status, as the shell printed it when the program ended."""
        screen = self.wait_for(r"\[exit \d+\]", timeout=timeout)
        return re.findall(r"\[exit (\d+)\]", screen)[-1]

    def close(self) -> None:
        self._run("kill-server", check=False)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[..., Screen]]:
    tmux = _tmux_or_skip()
    screens: list[Screen] = []
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "ALLM_DATA_DIR": str(tmp_path / "data"),
        "ALLM_PROFILES": str(PROFILES),
        "TERM": "xterm",
    }
    env.pop("TMUX", None)

    def start(*args: str) -> Screen:
        s = Screen(tmux, [sys.executable, "-m", "allm", "chat", "-i", *args], env, tmp_path)
        screens.append(s)
        return s

    try:
        yield start
    finally:
        for s in screens:
            s.close()


def _quit(s: Screen) -> None:
    s.type("/quit")
    assert s.exit_status() == "0", s.text()


# ------------------------------------------------------------------------------ the line parser


def test_lines_and_commands() -> None:
    assert parse_line("hello") == "hello"
    assert parse_line("/s") == Command("s")
    assert parse_line("/switch work") == Command("switch", ("work",))
    assert parse_line("/export a.json.gz anthropic") == Command("export", ("a.json.gz", "anthropic"))
    assert parse_line("//s is a command") == "/s is a command"
    assert parse_line("/frobnicate") is None
    with pytest.raises(ValueError, match="usage: /switch NAME"):
        parse_line("/switch")
    with pytest.raises(ValueError, match="usage: /import FILE"):
        parse_line("/import a b c")


# ------------------------------------------------------------------------------ with the Fake (fast)


def test_a_session_with_the_fake_provider_is_stored_and_resumed(terminal: Callable[..., Screen], tmp_path: Path) -> None:
    s = terminal("--provider", "fake", "--session", "work")
    s.wait_for(r"new session 'work'")
    s.type("Hello,")
    s.type("second line")
    s.type("/s")
    s.wait_for(r"assistant> \(fake\) you said: Hello,\s*\nsecond line")
    s.type("/sessions")
    s.wait_for(r"\* work \(2 messages\)")
    s.type("/switch notes")
    s.wait_for(r"new session 'notes'")
    s.type("Only a note")
    s.type("/s")
    s.wait_for(r"you said: Only a note")
    s.type("/switch work")
    s.wait_for(r"session 'work': 2 messages")
    export = tmp_path / "work.json.gz"
    s.type(f"/export {export} openai_chat")
    s.wait_for(r"wrote 2 messages, \d+ bytes, openai_chat")
    doc = json.loads(gzip.decompress(export.read_bytes()))
    assert doc["format"] == "openai_chat"
    assert [m["content"] for m in doc["payload"]["messages"]] == ["Hello,\nsecond line", "(fake) you said: Hello,\nsecond line"]
    s.type("/nonsense")
    s.wait_for(r"unknown command '/nonsense'")
    s.type("/s")
    s.wait_for(r"nothing to send")
    s.type("a draft I change my mind about")
    s.keys("C-c")  # no reply running: Ctrl-C discards the draft, the program stays
    s.wait_for(r"\(discarded; /quit leaves\)")
    s.type("/s")
    s.wait_for(lambda t: t.count("nothing to send") == 2)
    assert not s.dead()
    _quit(s)

    again = terminal("--provider", "fake", "--session", "work")
    again.wait_for(r"session 'work': 2 messages")
    again.wait_for(r"you> Hello,")
    again.type("/sessions")
    again.wait_for(r"notes \(2 messages\)")
    again.type("And again")
    again.type("/s")
    again.wait_for(r"you said: And again")
    again.type("/sessions")
    again.wait_for(r"\* work \(4 messages\)")
    again.keys("C-d")
    assert again.exit_status() == "0"


def test_import_replaces_the_history_and_reports_what_it_could_not_keep(terminal: Callable[..., Screen], tmp_path: Path) -> None:
    recorded = ROOT / "tests" / "fixtures" / "anthropic" / "stream-tool-result-followup" / "request.json"
    s = terminal("--provider", "fake", "--session", "imported")
    s.wait_for(r"new session 'imported'")
    s.type(f"/import {recorded} anthropic")
    s.wait_for(r"now holds 3 messages")
    assert "request fields that are not conversation history were not read" in s.text()
    s.type("/import /no/such/file.json.gz")
    s.wait_for(r"cannot read history file")
    s.type("/export out.json.gz")
    s.wait_for(r"wrote 3 messages")
    thread, warnings = formats.import_history(tmp_path / "out.json.gz")
    assert [m.role for m in thread.messages] == ["user", "assistant", "tool"] and warnings == []
    _quit(s)


def test_a_key_given_on_the_command_line_is_never_stored(terminal: Callable[..., Screen], tmp_path: Path) -> None:
    secret = "sk-test-LEAKCHECK0123456789abcdefXYZ"
    s = terminal("--provider", "fake", "--session", "keys", "--api-key", secret)
    s.wait_for(r"new session 'keys'")
    s.type("Hello")
    s.type("/s")
    s.wait_for(r"you said: Hello")
    s.type(f"/export {tmp_path / 'keys.json.gz'}")
    s.wait_for(r"wrote 2 messages")
    _quit(s)
    stored = [p for p in (tmp_path / "data").rglob("*") if p.is_file()] + [tmp_path / "keys.json.gz"]
    assert any(p.name.startswith("conversations.sqlite3") for p in stored)
    for p in stored:
        data = p.read_bytes()
        if p.suffix == ".gz":
            data = gzip.decompress(data)
        for i in range(len(secret) - 7):  # no piece of it either
            assert secret[i : i + 8].encode() not in data, (p, secret[i : i + 8])


def test_cards_and_models_come_from_the_profiles(terminal: Callable[..., Screen], tmp_path: Path) -> None:
    s = terminal("--profile", "echo", "--prompt", "brief", "--session", "p")
    s.wait_for(r"echo \(fake via fake\)")
    s.type("/model")
    s.wait_for(r"profiles: claude, echo, smol")
    s.type("/card")
    s.wait_for(r"cards: reviewer, tutor")
    s.type("/model nope")
    s.wait_for(r"no model named 'nope'")
    s.type("/card reviewer")  # nothing said yet: the session takes the card's prompt
    s.wait_for(r"card: card reviewer: claude \(claude-sonnet-4-5 via anthropic\)\)")
    s.type(f"/export {tmp_path / 'p.json.gz'}")
    s.wait_for(r"wrote 1 messages")
    thread, _ = formats.import_history(tmp_path / "p.json.gz")
    assert [(m.role, m.text) for m in thread.messages] == [("system", "You review code. Point at one problem at a time.")]
    s.type("/model echo")
    s.wait_for(r"model: echo \(fake via fake\)")
    s.type("Hi")
    s.type("/s")
    s.wait_for(r"you said: Hi")
    s.type("/card reviewer")
    s.wait_for(r"this session keeps its system prompt")
    _quit(s)

    # --card at the start: a new session begins with the card's prompt.
    c = terminal("--card", "reviewer", "--session", "r")
    c.wait_for(r"session 'r', card reviewer: claude \(claude-sonnet-4-5 via anthropic\)")
    c.wait_for(r"new session 'r'")
    c.type("/card")
    c.wait_for(r"card: reviewer;")
    c.type(f"/export {tmp_path / 'r.json.gz'} anthropic")
    c.wait_for(r"wrote 1 messages, \d+ bytes, anthropic")
    doc = json.loads(gzip.decompress((tmp_path / "r.json.gz").read_bytes()))
    assert doc["payload"] == {"system": [{"type": "text", "text": "You review code. Point at one problem at a time."}], "messages": []}
    _quit(c)


# ------------------------------------------------------------------------------ with the real local model


def _after(screen: str, marker: str) -> str:
    """What the screen shows after the last ``marker``."""
    return screen.rsplit(marker, 1)[-1]


@pytest.mark.live
def test_the_local_model_streams_cancels_and_resumes(terminal: Callable[..., Screen]) -> None:
    s = terminal("--provider", "local", "--session", "work", "--max-tokens", "2000")
    s.wait_for(r"new session 'work'", timeout=300)
    s.type("What is the capital of France?")
    s.type("/s")
    screen = s.wait_for(lambda t: re.search(r"assistant> .*\n+you>$", t) is not None, timeout=300)
    assert "Paris" in _after(screen, "What is the capital of France?")

    # A long reply (2,000 tokens uncut), cancelled with /c as soon as it starts streaming.
    s.type("Write a very long essay about the history of France, with at least 20 paragraphs.")
    s.type("/s")
    s.wait_for(lambda t: re.search(r"assistant> \S", _after(t, "at least 20 paragraphs.")) is not None, timeout=300)
    s.type("/c")
    screen = s.wait_for(lambda t: re.search(r"\(cancelled\)\s*you>$", t) is not None, timeout=120)
    reply = _after(screen, "at least 20 paragraphs.")
    assert len(reply) < 4000  # stopped long before the end (uncut, about 9,000 characters)

    # Ctrl-C cancels the running reply, not the program. (A fresh session, so the model sees
    # the same conversation as above and starts the same long reply: it samples greedily.)
    s.type("/switch counting")
    s.wait_for(r"new session 'counting'")
    s.type("Write a very long essay about the history of France, with at least 20 paragraphs.")
    s.type("/s")
    s.wait_for(lambda t: re.search(r"assistant> \S", _after(t, "'counting'")) is not None, timeout=300)
    s.keys("C-c")
    screen = s.wait_for(lambda t: t.count("(cancelled)") == 2 and t.endswith("you>"), timeout=120)
    assert len(_after(screen, "'counting'")) < 4000 and not s.dead()
    s.type("/sessions")
    screen = s.wait_for(r"  work \((\d+) messages\)", timeout=60)
    count = int(re.findall(r"  work \((\d+) messages\)", screen)[-1])
    assert count >= 4  # the question, its answer, the counting request and what was kept of the reply
    _quit(s)

    # The next run carries on with the stored session.
    again = terminal("--provider", "local", "--session", "work")
    again.wait_for(rf"session 'work': {count} messages", timeout=300)
    _quit(again)


def test_a_local_model_that_cannot_start_is_a_one_line_error(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ALLM_DATA_DIR": str(tmp_path), "ALLM_LLAMA_SERVER": str(tmp_path / "no-such-binary")}
    r = subprocess.run(
        [sys.executable, "-m", "allm", "chat", "-i", "--provider", "local"],
        input="", capture_output=True, text=True, env=env, timeout=120,
    )
    assert r.returncode == 1
    assert "cannot start the local model" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------ in-process (no terminal)


def test_lines_typed_during_a_reply_are_read_after_it_and_the_end_of_input_lets_it_finish(tmp_path: Path) -> None:
    """A script piped in arrives at once: its commands typed during the slow reply are
    commands after it (never text of the next message), and its end does not cancel the reply."""
    import io
    from typing import Any

    import allm
    from allm.conversations import Conversations
    from allm.interactive import Choice, Engines, Terminal
    from allm.profiles import ModelProfile
    from allm.stores import MemoryStore
    from allm.testing import delay, text

    class Slow(Engines):
        def engine(self, choice: Choice) -> Any:
            def answer(request: allm.Request) -> list[Any]:
                said = [m.text for m in request.messages if m.role == "user"][-1]
                return [text("slowly: "), delay(0.6), text(said)]

            return allm.Engine(adapter=allm.providers.Fake(function=answer), model="fake")

    out = io.StringIO()
    typed = "first\n/s\n/sessions\nsecond\n/s\n"
    with Conversations(store=MemoryStore()) as convs:
        term = Terminal(convs, Slow(), Choice(ModelProfile("f", "fake")), "t", out=out)
        term.feed(io.StringIO(typed))
        assert term.run() == 0
        assert [(m.role, m.text) for m in convs.messages("t")] == [
            ("user", "first"), ("assistant", "slowly: first"), ("user", "second"), ("assistant", "slowly: second")
        ]
    shown = out.getvalue()
    assert "* t (2 messages)" in shown  # /sessions ran after the first reply, as a command
    assert "(cancelled)" not in shown


def test_sessions_live_in_the_users_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ALLM_DATA_DIR, the SQLite file is in platformdirs' user data directory."""
    import builtins

    from allm.errors import ValidationError
    from allm.interactive import STORE_FILE, data_dir

    monkeypatch.delenv("ALLM_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(sys, "platform", "linux")
    assert data_dir() == tmp_path / "xdg" / "allm"
    env = {k: v for k, v in os.environ.items() if k != "ALLM_DATA_DIR"}
    r = subprocess.run(
        [sys.executable, "-m", "allm", "chat", "-i", "--provider", "fake", "--session", "home"],
        input="Hi\n/s\n/quit\n", capture_output=True, text=True, timeout=120,
        env={**env, "PYTHONPATH": str(ROOT), "XDG_DATA_HOME": str(tmp_path / "xdg")},
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "xdg" / "allm" / STORE_FILE).is_file()
    monkeypatch.setenv("ALLM_DATA_DIR", str(tmp_path / "mine"))
    assert data_dir() == tmp_path / "mine"
    monkeypatch.delenv("ALLM_DATA_DIR")
    real_import = builtins.__import__

    def no_platformdirs(name: str, *args: object, **kwargs: object) -> object:
        if name == "platformdirs":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_platformdirs)
    with pytest.raises(ValidationError) as exc:
        data_dir()
    assert exc.value.reason == "invalid_request" and "ALLM_DATA_DIR" in exc.value.message


def test_settings_the_provider_does_not_take_are_noted_once(tmp_path: Path) -> None:
    """A profile's min_p and repetition_penalty sent to OpenAI: not sent, and the terminal says so (once)."""
    import io

    from allm.conversations import Conversations
    from allm.interactive import Choice, Engines, Terminal
    from allm.profiles import ModelProfile
    from allm.stores import MemoryStore
    from tests.conftest import load_capture
    from tests.loopback import Req, Writer, serve

    body = load_capture("b1-chat-stream-usage").body

    async def answer(req: Req, w: Writer) -> None:
        await w.start_stream()
        await w.chunk(body)
        await w.end_stream()

    with serve(answer) as server:
        profile = ModelProfile("o", "openai", "gpt-4.1-mini", base_url=server.url + "/v1", min_p=0.05, repetition_penalty=1.1, temperature=0.3)
        out = io.StringIO()
        with Conversations(store=MemoryStore()) as convs:
            term = Terminal(convs, Engines("sk-test-0000000000"), Choice(profile), "t", out=out)
            term.feed(io.StringIO("Hi\n/s\nAgain\n/s\n"))
            assert term.run() == 0
        sent = [json.loads(r.body) for r in server.requests]
    shown = out.getvalue()
    assert len(sent) == 2 and all(b["temperature"] == 0.3 and "min_p" not in b and "repetition_penalty" not in b for b in sent)
    notes = re.findall(r"\(note: (.*)\)", shown)
    assert sorted(notes) == ["min_p is not supported by openai and was not sent", "repetition_penalty is not supported by openai and was not sent"], shown


# ------------------------------------------------------------------------------ a stalling upstream on loopback


def test_c_and_ctrl_c_cancel_a_reply_and_close_the_upstream(terminal: Callable[..., Screen]) -> None:
    """Against a server that streams part of a reply and stalls: /c and Ctrl-C each cancel the
    running reply (the server sees its connection closed), the program goes on, and what was
    kept of each reply is in the session when it is opened again."""
    import asyncio

    from tests.loopback import Req, Writer, chat_chunks, serve

    calls: list[bytes] = []

    async def answer(req: Req, w: Writer) -> None:
        calls.append(req.body)
        await w.start_stream()
        if b"quick" in req.body:
            for c in chat_chunks(["Quick", " answer."]):
                await w.chunk(c)
            await w.end_stream()
            return
        for c in chat_chunks(["Once upon", " a time"], done=False)[:2]:
            await w.chunk(c)
        await asyncio.sleep(60)

    with serve(answer) as server:
        args = ("--provider", "compatible", "--base-url", server.url + "/v1", "--model", "m", "--api-key", "sk-loopback-0123456789")
        s = terminal(*args, "--session", "stall")
        s.wait_for(r"new session 'stall'")
        s.type("Tell me a story")
        s.type("/s")
        s.wait_for(r"assistant> Once upon a time")
        s.type("/c")
        s.wait_for(r"\(cancelled\)\s*you>$")
        assert server.wait_for(lambda: server.disconnects == 1 and server.open_connections == 0, 10)
        s.type("Another story")
        s.type("/s")
        s.wait_for(lambda t: t.count("assistant> Once upon a time") == 2)
        s.keys("C-c")
        s.wait_for(lambda t: t.count("(cancelled)") == 2 and t.endswith("you>"))
        assert server.wait_for(lambda: server.disconnects == 2 and server.open_connections == 0, 10)
        assert not s.dead()
        s.type("Something quick")
        s.type("/s")
        s.wait_for(r"assistant> Quick answer\.")
        s.type("/sessions")
        s.wait_for(r"\* stall \(6 messages\)")
        _quit(s)
        assert len(calls) == 3

        again = terminal(*args, "--session", "stall")
        again.wait_for(r"session 'stall': 6 messages")
        again.type("/export stall.json.gz")
        again.wait_for(r"wrote 6 messages")
        _quit(again)
    thread, _ = formats.import_history(again.cwd / "stall.json.gz")
    kept = [(m.role, m.text, m.metadata.get("interrupted", False)) for m in thread.messages]
    assert kept == [
        ("user", "Tell me a story", False), ("assistant", "Once upon a time", True),
        ("user", "Another story", False), ("assistant", "Once upon a time", True),
        ("user", "Something quick", False), ("assistant", "Quick answer.", False),
    ]


def test_c_cancels_a_reply_that_streams_without_a_pause(terminal: Callable[..., Screen]) -> None:
    """A reply whose chunks arrive more often than the terminal's poll interval (every 10 ms
    for a minute): /c still cancels it at once and the server sees its connection closed."""
    import asyncio

    from tests.loopback import Req, Writer, chat_chunks, serve

    async def answer(req: Req, w: Writer) -> None:
        await w.start_stream()
        for c in chat_chunks([f"w{i} " for i in range(6000)], done=False):
            await w.chunk(c)
            await asyncio.sleep(0.01)

    with serve(answer) as server:
        args = ("--provider", "compatible", "--base-url", server.url + "/v1", "--model", "m", "--api-key", "sk-loopback-0123456789")
        s = terminal(*args, "--session", "steady")
        s.wait_for(r"new session 'steady'")
        s.type("Go on and on")
        s.type("/s")
        s.wait_for(r"assistant> w0 w1 w2")
        s.type("/c")
        screen = s.wait_for(r"\(cancelled\)\s*you>$", timeout=20)
        assert "w5999" not in screen
        assert server.wait_for(lambda: server.disconnects == 1 and server.open_connections == 0, 10)
        _quit(s)
