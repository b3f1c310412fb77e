"""``allm chat -i``: an interactive terminal over :class:`allm.Conversations`.

Type a message over one or more lines; a line with only ``/s`` sends it. The reply
streams as it is written; ``/c`` (or Ctrl-C) cancels the running turn, not the program.
Conversations are stored in SQLite in the user's data directory (``$ALLM_DATA_DIR``, else
``platformdirs.user_data_dir("allm")``), so ``allm chat -i --session work`` carries on
tomorrow where it stopped today.

=====================  =======================================================================
command                does
=====================  =======================================================================
``/s``                 send what was typed since the last send
``/c``                 cancel the running turn (when none runs: discard what was typed)
``/sessions``          the stored sessions, with their message counts
``/switch NAME``       continue (or start) session NAME
``/export FILE [FMT]`` write this session's history (``allm``, ``openai_chat``, ``anthropic``...)
``/import FILE [FMT]`` replace this session's history with a file's (see ``allm.formats``)
``/model [NAME]``      show the model, or switch to model profile NAME
``/card [NAME]``       show the card, or switch to card NAME (its model; its prompt for a new session)
``/help``              this list
``/quit``              leave (Ctrl-D too)
=====================  =======================================================================
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import attrs

from . import formats
from .engine import Engine
from .errors import AllmError, EngineError
from .events import MessageStarted, TextDelta
from .profiles import ModelProfile, Profile, ProfileError, Profiles
from .providers import registry
from .types import Message, Thread, system

__all__ = ["COMMANDS", "DATA_DIR_ENV", "Command", "Terminal", "data_dir", "parse_line", "run"]

DATA_DIR_ENV = "ALLM_DATA_DIR"
STORE_FILE = "conversations.sqlite3"
COMMANDS = ("s", "c", "sessions", "switch", "export", "import", "model", "card", "help", "quit")
_ARITY = {"switch": (1, 1), "export": (1, 2), "import": (1, 2), "model": (0, 1), "card": (0, 1)}
POLL = 0.05  # seconds between looks at the keyboard while a reply streams


def data_dir() -> Path:
    """``$ALLM_DATA_DIR``, else the user's data directory for allm (``~/.local/share/allm`` on Linux).

    Raises :class:`~allm.errors.ValidationError` when ``platformdirs`` (the ``terminal``
    extra) is needed and missing.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    try:
        import platformdirs
    except ImportError:
        from .errors import ValidationError

        raise ValidationError(
            f"set {DATA_DIR_ENV}, or install the terminal extra (pip install 'allm[terminal]') for platformdirs",
            reason="invalid_request",
        ) from None
    return Path(platformdirs.user_data_dir("allm"))


@attrs.frozen
class Command:
    """A typed command: ``name`` (one of :data:`COMMANDS`) and its arguments."""

    name: str
    args: tuple[str, ...] = ()


def parse_line(line: str) -> Command | str | None:
    """A line as a :class:`Command`, as text for the message being typed (``str``), or
    ``None`` for a line that starts with ``/`` but is no command (``//x`` is the text ``/x``).

    Raises ``ValueError`` with a usage message for a command with the wrong number of
    arguments.
    """
    if not line.startswith("/"):
        return line
    if line.startswith("//"):
        return line[1:]
    words = line[1:].split()
    if not words or words[0] not in COMMANDS:
        return None
    name, args = words[0], tuple(words[1:])
    lo, hi = _ARITY.get(name, (0, 0))
    if not lo <= len(args) <= hi:
        usage = {"switch": "/switch NAME", "export": "/export FILE [FORMAT]", "import": "/import FILE [FORMAT]",
                 "model": "/model [NAME]", "card": "/card [NAME]"}.get(name, f"/{name}")
        raise ValueError(f"usage: {usage}")
    return Command(name, args)


# ------------------------------------------------------------------------------ engines


@attrs.define
class Choice:
    """What the next turns use: a model profile (maybe built from command-line flags), a
    system prompt for new sessions, and the card's name if one was picked."""

    model: ModelProfile
    system: str | None = None
    card: str | None = None
    settings: dict[str, Any] = attrs.field(factory=dict)

    def describe(self) -> str:
        m = self.model
        name = m.model or registry.spec(m.provider).default_model
        card = f"card {self.card}: " if self.card else ""
        return f"{card}{m.name} ({name} via {m.provider})"


class Engines:
    """Builds engines for choices, starting the local llama-server once when one needs it."""

    def __init__(self, api_key: str | None = None) -> None:
        self._server: Any = None
        self.api_key = api_key

    def engine(self, choice: Choice) -> Engine:
        base_url = choice.model.base_url
        if registry.spec(choice.model.provider).local and not base_url:
            base_url = self._local_url()
        return Profile(choice.model, choice.system, (), {**choice.model.sampler(), **choice.settings}).engine(base_url=base_url)

    def _local_url(self) -> str:
        if self._server is None:
            from .local import LocalServer, LocalServerError

            try:
                self._server = LocalServer().start()
            except LocalServerError as exc:
                raise EngineError(f"cannot start the local model: {exc}", reason="invalid_engine") from None
        url: str = self._server.base_url
        return url

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


# ------------------------------------------------------------------------------ the terminal


class Terminal:
    """The interactive loop over ``convs`` (an :class:`allm.Conversations`): what the person
    types arrives through :meth:`feed`, replies go to ``out``; see the module docstring for
    the commands."""

    def __init__(
        self,
        convs: Any,
        engines: Engines,
        choice: Choice,
        session: str,
        *,
        profiles: Profiles | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.convs = convs
        self.engines = engines
        self.choice = choice
        self.session = session
        self.profiles = profiles or Profiles()
        self.out = out or sys.stdout
        self.draft: list[str] = []
        self.ahead: list[str] = []  # lines typed while a reply streamed, read after it
        self.noted: set[str] = set()  # call warnings already shown (each once)
        self.inbox: queue.Queue[str | None] = queue.Queue()
        self.cancel_requested = threading.Event()

    # -- output

    def say(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def prompt(self) -> None:
        self.say("you> " if not self.draft else "...> ", end="")

    # -- input

    def feed(self, source: TextIO) -> threading.Thread:
        """Read lines from ``source`` in a daemon thread into the inbox (``None`` at the end)."""

        def read() -> None:
            try:
                for line in source:
                    self.inbox.put(line.rstrip("\r\n"))
            finally:
                self.inbox.put(None)

        t = threading.Thread(target=read, name="allm-terminal-input", daemon=True)
        t.start()
        return t

    def on_sigint(self, _signum: int, _frame: FrameType | None) -> None:
        """Ctrl-C: cancel the running turn; with none running, discard what was typed."""
        self.cancel_requested.set()

    def next_line(self) -> str | None:
        if self.ahead:
            return self.ahead.pop(0)
        while True:
            if self.cancel_requested.is_set():
                self.cancel_requested.clear()
                if self.draft:
                    self.draft.clear()
                    self.say("\n(discarded; /quit leaves)")
                else:
                    self.say("\n(/quit leaves)")
                self.prompt()
            try:
                return self.inbox.get(timeout=POLL * 4)
            except queue.Empty:
                continue

    # -- sessions

    def open_session(self, name: str) -> None:
        info = self.convs.find(name, engine=self.engines.engine(self.choice))
        if info is None:
            messages = [system(self.choice.system)] if self.choice.system else []
            info = self.convs.open(name, engine=self.engines.engine(self.choice), messages=messages)
            self.say(f"(new session {name!r})")
        else:
            self.say(f"(session {name!r}: {info.message_count} messages)")
            self.show_last(name)
        self.session = name

    def show_last(self, name: str) -> None:
        msgs = self.convs.messages(name)
        last = [m for m in msgs if m.role in ("user", "assistant") and m.text][-2:]
        for m in last:
            self.say(f"{'you' if m.role == 'user' else 'assistant'}> {m.text}")

    def stored_sessions(self) -> list[tuple[str, int]]:
        """``(name, message_count)`` of every stored session (the live ones are stored too)."""
        from .conversations.storage import NAMESPACE  # type: ignore[import-not-found, unused-ignore]

        return [(name, len(self.convs.messages(name))) for name in self.convs.store.keys(NAMESPACE)]

    # -- turns

    def send(self, text: str) -> None:
        with self.convs.subscribe(self.session) as sub:
            self.convs.send(self.session, text, api_key=self.engines.api_key)
            started = False
            while True:
                # The keyboard is looked at before every update, not only when the reply
                # pauses: a model streaming steadily must still be cancellable with /c.
                self._keys_during_turn()
                if self.cancel_requested.is_set():
                    self.cancel_requested.clear()
                    self.convs.interrupt(self.session)
                try:
                    upd = sub.get(timeout=POLL)
                except AllmError as exc:
                    if exc.reason == "timeout":  # nothing new
                        continue
                    raise
                if isinstance(upd, MessageStarted):
                    self._note(upd)
                elif isinstance(upd, TextDelta):
                    if not started:
                        self.say("assistant> ", end="")
                        started = True
                    self.say(upd.delta, end="")
                elif type(upd).__name__ == "TurnEnded":
                    if started:
                        self.say()
                    self._ended(upd)
                    return

    def _note(self, started: MessageStarted) -> None:
        """Say once what the provider was not sent (a profile's ``min_p`` to OpenAI, say)."""
        for w in started.warnings:
            if w.message not in self.noted:
                self.noted.add(w.message)
                self.say(f"(note: {w.message})")

    def _keys_during_turn(self) -> None:
        while True:
            try:
                line = self.inbox.get_nowait()
            except queue.Empty:
                return
            if line is None:  # the input ended: the reply finishes, then the program ends
                self.inbox.put(None)
                return
            if line.strip() == "/c":
                self.cancel_requested.set()
            else:
                self.ahead.append(line)  # typed ahead (text or a command): read once the reply ends

    def _ended(self, upd: Any) -> None:
        if upd.outcome == "interrupted":
            self.say("(cancelled)")
        elif upd.outcome == "error":
            self.say(f"(the turn failed: {upd.error})")

    # -- commands

    def run(self) -> int:
        self.say(f"allm chat: session {self.session!r}, {self.choice.describe()}.")
        self.say("Type a message; /s on its own line sends it, /c cancels a reply, /help lists commands.")
        self.open_session(self.session)
        while True:
            self.prompt()
            line = self.next_line()
            if line is None:
                self.say()
                return 0
            try:
                parsed = parse_line(line)
            except ValueError as exc:
                self.say(f"({exc})")
                continue
            if parsed is None:
                self.say(f"(unknown command {line.split()[0]!r}; /help lists commands)")
            elif isinstance(parsed, str):
                self.draft.append(parsed)
            elif parsed.name == "quit":
                return 0
            else:
                try:
                    self.command(parsed)
                except (AllmError, OSError) as exc:
                    self.say(f"({exc})")

    def command(self, c: Command) -> None:
        if c.name == "s":
            text = "\n".join(self.draft).strip()
            self.draft.clear()
            if not text:
                self.say("(nothing to send)")
                return
            self.send(text)
        elif c.name == "c":
            self.say("(discarded)" if self.draft else "(nothing is running)")
            self.draft.clear()
        elif c.name == "help":
            self.say(HELP)
        elif c.name == "sessions":
            for name, count in self.stored_sessions():
                mark = "*" if name == self.session else " "
                self.say(f"{mark} {name} ({count} messages)")
        elif c.name == "switch":
            self.open_session(c.args[0])
        elif c.name == "export":
            fmt = c.args[1] if len(c.args) > 1 else "allm"
            info = self.convs.export_history(self.session, c.args[0], fmt)
            self.say(f"(wrote {info.message_count} messages, {info.size_bytes} bytes, {fmt})")
            for w in info.warnings:
                self.say(f"  not kept: {w}")
        elif c.name == "import":
            self.import_history(c.args[0], c.args[1] if len(c.args) > 1 else None)
        elif c.name == "model":
            self.switch_model(c.args[0] if c.args else None)
        elif c.name == "card":
            self.switch_card(c.args[0] if c.args else None)

    def import_history(self, path: str, fmt: str | None) -> None:
        """Replace the session's history with a file's (any format of :mod:`allm.formats`),
        saying what could not be kept."""
        info = self.convs.import_history(path, self.session, fmt, replace=True, engine=self.engines.engine(self.choice))
        for w in info.warnings:
            self.say(f"  not kept: {w}")
        self.say(f"(session {self.session!r} now holds {info.message_count} messages from {path}, {info.format})")

    def replace_history(self, messages: tuple[Message, ...]) -> None:
        """The session's history becomes ``messages``, in one store append (the manager's
        ``import_history(..., replace=True)``), or nothing changes."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "history.json.gz"
            formats.export_history(Thread(messages), path)
            self.convs.import_history(path, self.session, "allm", replace=True, engine=self.engines.engine(self.choice))

    def _reengine(self) -> None:
        self.convs.close(self.session)
        self.convs.reopen(self.session, engine=self.engines.engine(self.choice))

    def switch_model(self, name: str | None) -> None:
        if name is None:
            self.say(f"(model: {self.choice.describe()}; profiles: {', '.join(sorted(self.profiles.models)) or 'none'})")
            return
        self.choice = attrs.evolve(self.choice, model=self.profiles.model(name), card=None)
        self._reengine()
        self.say(f"(model: {self.choice.describe()})")

    def switch_card(self, name: str | None) -> None:
        if name is None:
            self.say(f"(card: {self.choice.card or 'none'}; cards: {', '.join(sorted(self.profiles.cards)) or 'none'})")
            return
        p = self.profiles.resolve(card=name)
        self.choice = Choice(p.model, p.system, name, dict(self.choice.settings))
        if all(m.role == "system" for m in self.convs.messages(self.session)):
            # Nothing said yet: the session starts over with the card's prompt.
            self.replace_history((system(p.system),) if p.system else ())
            note = ""
        else:
            self._reengine()
            note = " (this session keeps its system prompt)"
        self.say(f"(card: {self.choice.describe()}){note}")


HELP = """\
  /s                  send what was typed since the last send
  /c                  cancel the running reply (or discard what was typed)
  /sessions           the stored sessions
  /switch NAME        continue (or start) session NAME
  /export FILE [FMT]  write this session's history (allm, openai_chat, openai_responses, anthropic, gemini)
  /import FILE [FMT]  replace this session's history with a file's
  /model [NAME]       show the model, or switch to model profile NAME
  /card [NAME]        show the card, or switch to card NAME
  /quit               leave (Ctrl-D too); Ctrl-C cancels a reply
  //text              a line that starts with /"""


# ------------------------------------------------------------------------------ the command line


@contextlib.contextmanager
def _sigint(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def choice_from_args(args: Any, profiles: Profiles, provider: str | None) -> Choice:
    """The starting :class:`Choice` from ``allm chat`` flags: ``--card``, else ``--profile``
    (a model profile; ``--prompt`` names its system prompt), else ``--provider`` / ``--model`` /
    ``--base-url`` / ``--system``. ``--temperature`` and ``--max-tokens`` win over a profile."""
    settings = {k: v for k, v in (("temperature", args.temperature), ("max_tokens", args.max_tokens)) if v is not None}
    if args.card:
        p = profiles.resolve(card=args.card, **settings)
        return Choice(p.model, p.system, args.card, settings)
    if args.profile:
        p = profiles.resolve(args.profile, args.prompt_name, system_prompt=args.system, **settings)
        return Choice(p.model, p.system, None, settings)
    if args.prompt_name:
        raise ProfileError("--prompt needs --profile (or use --card)", reason="unknown_name")
    assert provider is not None
    mp = ModelProfile("(command line)", provider, args.model, args.base_url)
    return Choice(mp, args.system, None, settings)


def run(args: Any, provider: str | None, stdin: TextIO | None = None, out: TextIO | None = None) -> int:
    """Run the terminal for parsed ``allm chat -i`` arguments (``provider``: the one the CLI
    picked when no card or profile is given). Returns the exit status."""
    from .conversations import Conversations  # type: ignore[import-not-found, unused-ignore]
    from .stores.sqlite import SQLiteStore

    profiles = Profiles.load(args.profiles) if args.profiles else Profiles.load_default()
    choice = choice_from_args(args, profiles, provider)
    directory = data_dir()
    directory.mkdir(parents=True, exist_ok=True)
    engines = Engines(args.api_key or None)
    store = SQLiteStore(str(directory / STORE_FILE))
    try:
        with Conversations(store=store) as convs:
            term = Terminal(convs, engines, choice, args.session, profiles=profiles, out=out)
            term.feed(stdin or sys.stdin)
            with _sigint(term.on_sigint):
                return term.run()
    finally:
        engines.close()
        store.close()
