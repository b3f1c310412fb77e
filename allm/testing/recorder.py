"""Record real HTTP traffic once, replay it offline through the same adapters.

::

    from allm.testing import recording

    with recording("tests/recordings/weather", mode="once"):
        result = my_agent.run(engine, "Weather in Paris?")     # the real provider, the first time

Recording and replay sit under the adapters, at allm's transport (see
:mod:`allm.testing._hook`): in record mode a call goes to the provider and its request
and response bytes are saved; in replay mode the same adapter reads the saved bytes
through the same transport path (status handling, retries on a recorded 429, size
limits, stream decoding, draining), streamed in chunks like a socket. A pipeline's test
thus exercises the real wire format with no network and no key.

Layout (the one of ``tests/fixtures/``): a recording is a folder of case folders, one per
exchange, named ``NN-method-path`` in call order, each holding

- ``request_line.txt`` (method and URL), ``request.json`` (the body as sent),
  ``request_headers.txt`` (credentials omitted);
- ``status.txt``, ``headers.txt``, ``response.raw`` (the body as the client read it:
  chunked framing and content encoding undone);
- ``SOURCE.txt``: recorder, time, provider, test, whether the body was read to its end.

Keys are never written: credential headers (``Authorization``, ``x-api-key``,
``x-goog-api-key``, ``api-key``, cookies, any header named like a key or token) are
left out, and every value they carried (and any 8-character piece of it, and
masked key shapes such as ``sk-abc****wxyz``) is replaced by ``[redacted]`` wherever else
it appears, request and response alike.

Matching (replay): method, path, query and the body, JSON bodies compared as values
(key order and whitespace do not matter; ``ignore`` drops fields such as
``"metadata.user_id"``). Each recording replays once, in order, so a recorded 429 then
200 for the same request replays as a retry. A request with no recording raises
:class:`NoRecording` with a diff against the nearest one.

A replay can be paced (``initial_delay``, ``chunk_delay``, in seconds, as the Vercel AI
SDK's ``simulateReadableStream``): the engine's first-event, idle and total deadlines
apply to those pauses as they do to a socket's reads.

Modes (as vcrpy's): ``"none"`` replays only (the default); ``"once"`` records when the
folder holds no recording yet, else replays; ``"new_episodes"`` replays what matches and
records the rest; ``"all"`` discards the folder's recordings and records everything.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import re
import shutil
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import attrs
import httpx
import orjson

from .. import _transport
from . import _hook
from ._hook import RequestBlocked, provider_of, safe_url

__all__ = ["MODES", "Exchange", "NoRecording", "Recording", "load_exchange", "recording"]

Mode = Literal["none", "once", "new_episodes", "all"]
MODES: tuple[str, ...] = ("none", "once", "new_episodes", "all")

#: Request headers never written (their values are scrubbed from everything written).
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie", "set-cookie"}
)
_SECRET_NAME = re.compile(r"(?i)(auth|key|token|secret|cookie|passw|session|signature)")
_REDACTED_VALUES = frozenset({"openai-organization", "openai-project"})
_NOT_REPLAYED = frozenset({"content-encoding", "content-length", "transfer-encoding", "connection", "keep-alive"})
_FRAGMENT = 8  # characters: a piece of a key this long is key material
_MASKED = re.compile(rb"[^\s*\"\\]{2,}\*{4,}[^\s*\"\\]*")


class NoRecording(RequestBlocked):
    """A request in replay mode that no recording matches (it was not sent).

    Attributes (besides :class:`~allm.testing.RequestBlocked`'s ``provider``, ``method``,
    ``url``): ``path`` (the recording folder), ``nearest`` (the name of the closest
    recording, or ``None``) and ``diff`` (unified diff, recorded -> sent, of the closest
    recording's request against this one).
    """

    def __init__(
        self, message: str, *, provider: str, method: str, url: str, path: str, nearest: str | None, diff: str
    ) -> None:
        super().__init__(message, provider=provider, method=method, url=url)
        self.path = path
        self.nearest = nearest
        self.diff = diff

    def __reduce__(self) -> tuple[Any, ...]:
        return (_no_recording, (str(self), self.provider, self.method, self.url, self.path, self.nearest, self.diff))


NoRecording.__module__ = "allm.testing"


def _no_recording(message: str, provider: str, method: str, url: str, path: str, nearest: str | None, diff: str) -> NoRecording:
    return NoRecording(message, provider=provider, method=method, url=url, path=path, nearest=nearest, diff=diff)


@attrs.frozen
class Exchange:
    """One recorded HTTP exchange (a case folder). Bodies are bytes; headers are
    ``(name, value)`` pairs in the order received; ``complete`` is false when the client
    closed the response before its end (a cancelled stream)."""

    method: str
    url: str
    request_headers: tuple[tuple[str, str], ...]
    request_body: bytes
    status: int
    reason: str
    response_headers: tuple[tuple[str, str], ...]
    response_body: bytes
    name: str = ""
    complete: bool = True

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.url).path

    @property
    def query(self) -> tuple[tuple[str, str], ...]:
        return _query(urllib.parse.urlsplit(self.url).query)


def _query(q: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in urllib.parse.parse_qsl(q, keep_blank_values=True) if k.lower() not in _hook._KEY_PARAMS))


# ------------------------------------------------------------------------------ files


def _headers_text(pairs: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{k}: {v}\n" for k, v in pairs)


def _parse_headers(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    for line in text.splitlines():
        if ":" in line:
            k, _, v = line.partition(":")
            out.append((k.strip(), v.strip()))
    return tuple(out)


def load_exchange(case: str | Path) -> Exchange:
    """The exchange saved in the case folder ``case`` (this module's layout, or any
    ``tests/fixtures/<provider>/<case>/`` folder). Raises ``FileNotFoundError`` when the
    folder lacks ``request_line.txt``, ``status.txt`` or ``response.raw``."""
    d = Path(case)
    method, _, url = (d / "request_line.txt").read_text().strip().partition(" ")
    status_line = (d / "status.txt").read_text().strip()
    code, _, reason = status_line.partition(" ")
    source = d / "SOURCE.txt"
    complete = not (source.exists() and "\ncomplete: no" in "\n" + source.read_text())

    def opt(name: str) -> bytes:
        p = d / name
        return p.read_bytes() if p.exists() else b""

    return Exchange(
        method.upper(),
        url.strip(),
        _parse_headers(opt("request_headers.txt").decode()),
        opt("request.json"),
        int(code),
        reason,
        _parse_headers(opt("headers.txt").decode()),
        (d / "response.raw").read_bytes(),
        d.name,
        complete,
    )


def _is_case(d: Path) -> bool:
    return d.is_dir() and (d / "request_line.txt").is_file() and (d / "response.raw").is_file()


def _slug(path: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")
    return s[:60] or "root"


# ------------------------------------------------------------------------------ keys


def _secrets(headers: httpx.Headers, url: httpx.URL) -> list[str]:
    out: list[str] = []
    for k, v in headers.multi_items():
        if k.lower() in CREDENTIAL_HEADERS or _SECRET_NAME.search(k):
            scheme, _, rest = v.partition(" ")
            out.append(rest.strip() if rest and scheme.lower() in ("bearer", "basic", "token") else v)
    for k, v in urllib.parse.parse_qsl(url.query.decode(), keep_blank_values=True):
        if k.lower() in _hook._KEY_PARAMS:
            out.append(v)
    return sorted({s for s in out if len(s) >= 4}, key=len, reverse=True)


def _escaped(secret: str) -> set[bytes]:
    return {secret.encode(), orjson.dumps(secret)[1:-1], secret.encode("unicode_escape")}


def scrub(data: bytes, secrets: Sequence[str]) -> bytes:
    """``data`` with every secret (raw or JSON-escaped), every 8-character piece of one and
    masked key shapes (``sk-abc****wxyz``) replaced by ``[redacted]``. Returns ``data``
    unchanged when ``secrets`` is empty."""
    if not secrets:
        return data
    for s in secrets:
        for form in _escaped(s):
            if len(form) >= 4:
                data = data.replace(form, b"[redacted]")
        for form in _escaped(s):
            data = _fragments(data, form)
    return _MASKED.sub(b"[redacted]", data)


def _fragments(data: bytes, secret: bytes) -> bytes:
    n = _FRAGMENT
    if len(secret) < n or len(data) < n:
        return data
    pieces = {secret[i : i + n] for i in range(len(secret) - n + 1)}
    covered = bytearray(len(data))
    hit = False
    for i in range(len(data) - n + 1):
        if data[i : i + n] in pieces:
            hit = True
            covered[i : i + n] = b"\x01" * n
    if not hit:
        return data
    out = bytearray()
    i = 0
    while i < len(data):
        if covered[i]:
            while i < len(data) and covered[i]:
                i += 1
            out += b"[redacted]"
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


def _scrub_text(text: str, secrets: Sequence[str]) -> str:
    return scrub(text.encode(), secrets).decode("utf-8", "replace")


# ------------------------------------------------------------------------------ bodies, matching, diffs


def _normal(body: bytes, ignore: Sequence[str]) -> Any:
    try:
        value = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        return ("bytes", body)
    for path in ignore:
        _drop(value, path.split("."))
    return ("json", value)


def _drop(value: Any, parts: list[str]) -> None:
    if not parts or not isinstance(value, (dict, list)):
        return
    if isinstance(value, list):
        for v in value:
            _drop(v, parts)
        return
    head, rest = parts[0], parts[1:]
    if not rest:
        value.pop(head, None)
    elif head in value:
        _drop(value[head], rest)


def _pretty(normal: Any) -> list[str]:
    kind, value = normal
    if kind == "bytes":
        return value.decode("utf-8", "replace").splitlines() or [""]
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    return [line if len(line) <= 200 else line[:197] + "..." for line in text.splitlines()]


@attrs.frozen
class _Key:
    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    body: Any

    def matches(self, other: _Key, by_body: bool) -> bool:
        same = self.method == other.method and self.path == other.path and self.query == other.query
        return same and (not by_body or self.body == other.body)


# ------------------------------------------------------------------------------ streams


def _wait(seconds: float) -> tuple[float, bool]:
    """``(seconds to sleep, whether the read then times out)``: a pause ends at the read
    deadline, and a read that reaches it times out (``httpx.ReadTimeout``), as a socket's would."""
    deadline = _transport.read_deadline()
    if deadline is not None:
        left = deadline - time.monotonic()
        if seconds >= left:
            return max(0.0, left), True
    return seconds, False


class _Replay(httpx.SyncByteStream, httpx.AsyncByteStream):
    """Saved bytes, handed out in chunks like a socket's reads, paced by ``(first, between)`` seconds."""

    def __init__(self, body: bytes, split: Callable[[bytes], Iterable[bytes]], pace: tuple[float, float]) -> None:
        self._body = body
        self._split = split
        self._pace = pace

    def _delays(self) -> Iterator[tuple[float, bytes]]:
        first, between = self._pace
        for i, chunk in enumerate(c for c in self._split(self._body) if c):
            yield (first if i == 0 else between), chunk

    def __iter__(self) -> Iterator[bytes]:
        for delay, chunk in self._delays():
            if delay > 0:
                pause, late = _wait(delay)
                time.sleep(pause)
                if late:
                    raise httpx.ReadTimeout("the replay's pause outlasted the read deadline")
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        import asyncio

        for delay, chunk in self._delays():
            if delay > 0:
                pause, late = _wait(delay)
                await asyncio.sleep(pause)
                if late:
                    raise httpx.ReadTimeout("the replay's pause outlasted the read deadline")
            yield chunk


class _Tee(httpx.SyncByteStream, httpx.AsyncByteStream):
    """The real response's (decoded) bytes, passed on and kept; ``done`` runs once at the end."""

    def __init__(self, response: httpx.Response, done: Callable[[bytes, bool], None]) -> None:
        self._response = response
        self._done = done
        self._parts: list[bytes] = []
        self._finished = False

    def _finish(self, complete: bool) -> None:
        if not self._finished:
            self._finished = True
            self._done(b"".join(self._parts), complete)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._response.iter_bytes():
            self._parts.append(chunk)
            yield chunk
        self._finish(True)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.aiter_bytes():
            self._parts.append(chunk)
            yield chunk
        self._finish(True)

    def close(self) -> None:
        try:
            self._response.close()
        finally:
            self._finish(False)

    async def aclose(self) -> None:
        try:
            await self._response.aclose()
        finally:
            self._finish(False)


def _fixed(size: int) -> Callable[[bytes], Iterable[bytes]]:
    def split(body: bytes) -> Iterable[bytes]:
        return (body[i : i + size] for i in range(0, len(body), size))

    return split


# ------------------------------------------------------------------------------ the recording


class Recording:
    """A folder of recorded exchanges, replayed or recorded while active (a context manager,
    process-wide; the innermost active recording answers every allm HTTP request).

    - ``path``: the folder (created when something is recorded).
    - ``mode``: ``"none"``, ``"once"``, ``"new_episodes"`` or ``"all"`` (module docstring).
    - ``match``: ``"body"`` (method, path, query and JSON body; the default) or
      ``"path"`` (method, path and query only: replays a recording whose body another
      client wrote, such as ``tests/fixtures`` cases).
    - ``ignore``: dotted JSON fields left out of body matching (``"metadata.user_id"``).
    - ``chunks``: how replayed bodies are cut: a size in bytes (default 256) or a function
      ``bytes -> iterable of bytes``.
    - ``initial_delay``, ``chunk_delay``: seconds a replay waits before its first chunk and
      between chunks (default 0). The engine's deadlines apply as to a socket: a pause
      that reaches the first-event, idle or total deadline ends in allm's ``timeout``.
    - ``test`` and ``note``: written to each new case's ``SOURCE.txt``.

    After use: ``exchanges`` (those loaded from the folder), ``played`` (replayed, in
    order), ``recorded`` (new ones), ``unplayed`` (loaded and never replayed).
    ``path`` may also be one case folder, replayed alone (mode ``"none"`` only).
    Raises ``ValueError`` for an unknown ``mode`` or ``match``, a ``chunks`` size below
    1, a negative delay, or a case folder given with a recording mode.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        mode: Mode | str = "none",
        match: Literal["body", "path"] | str = "body",
        ignore: Iterable[str] = (),
        chunks: int | Callable[[bytes], Iterable[bytes]] = 256,
        initial_delay: float = 0.0,
        chunk_delay: float = 0.0,
        test: str | None = None,
        note: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown recording mode {mode!r}; expected one of {', '.join(MODES)}")
        if match not in ("body", "path"):
            raise ValueError(f"match= is 'body' or 'path', not {match!r}")
        if isinstance(chunks, int) and chunks < 1:
            raise ValueError("chunks= must be a positive size in bytes or a function")
        self.path = Path(path)
        if mode != "none" and _is_case(self.path):
            raise ValueError(f"{self.path} is one recorded exchange (a case folder): replay it with mode 'none', record into a folder of its own")
        self.mode: str = mode
        self.match = match
        self.ignore = tuple(ignore)
        self._split = _fixed(chunks) if isinstance(chunks, int) else chunks
        if initial_delay < 0 or chunk_delay < 0:
            raise ValueError("initial_delay= and chunk_delay= are seconds, 0 or more")
        self._pace = (initial_delay, chunk_delay)
        self.test = test
        self.note = note
        self.exchanges: list[Exchange] = self._load()
        self.played: list[Exchange] = []
        self.recorded: list[Exchange] = []
        self._keys = [self._key_of(e.method, e.url, e.request_body) for e in self.exchanges]
        self._used: set[int] = set()
        self._lock = threading.Lock()
        self._active = 0
        self.effective_mode = mode

    def __repr__(self) -> str:
        return f"Recording({str(self.path)!r}, mode={self.mode!r}, {len(self.exchanges)} recorded)"

    def _load(self) -> list[Exchange]:
        if _is_case(self.path):
            return [load_exchange(self.path)]
        if not self.path.is_dir():
            return []
        return [load_exchange(d) for d in sorted(self.path.iterdir()) if _is_case(d)]

    def _key_of(self, method: str, url: str, body: bytes) -> _Key:
        parts = urllib.parse.urlsplit(url)
        normal = _normal(body, self.ignore) if self.match == "body" else None
        return _Key(method.upper(), parts.path, _query(parts.query), normal)

    @property
    def unplayed(self) -> list[Exchange]:
        return [e for i, e in enumerate(self.exchanges) if i not in self._used]

    # -- activation

    def __enter__(self) -> Recording:
        if self._active == 0:
            self.effective_mode = self.mode
            if self.mode == "once":
                self.effective_mode = "none" if self.exchanges else "all"
            if self.effective_mode == "all":
                self._clear()
        self._active += 1
        _hook.push(self)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        _hook.pop(self)
        self._active -= 1

    def _clear(self) -> None:
        if self.path.is_dir() and not _is_case(self.path):
            for d in self.path.iterdir():
                if _is_case(d):
                    shutil.rmtree(d)
        self.exchanges = []
        self._keys = []
        self._used = set()

    # -- the exchange hook

    def _answer(self, request: httpx.Request) -> httpx.Response | None:
        """The replayed response, ``None`` to record, or raise :class:`NoRecording`."""
        if self.effective_mode == "all":
            return None
        key = self._key_of(request.method, str(request.url), request.content)
        with self._lock:
            for i, k in enumerate(self._keys):
                if i not in self._used and k.matches(key, self.match == "body"):
                    self._used.add(i)
                    ex = self.exchanges[i]
                    self.played.append(ex)
                    return self._replay(ex, request)
        if self.effective_mode == "new_episodes":
            return None
        raise self._no_recording(request, key)

    def _replay(self, ex: Exchange, request: httpx.Request) -> httpx.Response:
        headers = [(k, v) for k, v in ex.response_headers if k.lower() not in _NOT_REPLAYED]
        return httpx.Response(
            ex.status,
            headers=headers,
            stream=_Replay(ex.response_body, self._split, self._pace),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": ex.reason.encode("ascii", "replace")},
        )

    def handle(self, request: httpx.Request, send: Callable[[httpx.Request], httpx.Response]) -> httpx.Response:
        resp = self._answer(request)
        if resp is not None:
            return resp
        secrets = _secrets(request.headers, request.url)
        real = send(request)
        return self._tee(request, real, secrets)

    async def ahandle(
        self, request: httpx.Request, send: Callable[[httpx.Request], Awaitable[httpx.Response]]
    ) -> httpx.Response:
        resp = self._answer(request)
        if resp is not None:
            return resp
        secrets = _secrets(request.headers, request.url)
        real = await send(request)
        return self._tee(request, real, secrets)

    def _tee(self, request: httpx.Request, real: httpx.Response, secrets: list[str]) -> httpx.Response:
        headers = [(k, v) for k, v in real.headers.multi_items() if k.lower() not in _NOT_REPLAYED]
        reason = real.extensions.get("reason_phrase", b"")
        reason_text = reason.decode("ascii", "replace") if isinstance(reason, bytes) else str(reason)

        def done(body: bytes, complete: bool) -> None:
            self._save(request, real, reason_text, body, complete, secrets)

        return httpx.Response(real.status_code, headers=headers, stream=_Tee(real, done), request=request, extensions=real.extensions)

    # -- saving

    def _save(
        self, request: httpx.Request, real: httpx.Response, reason: str, body: bytes, complete: bool, secrets: list[str]
    ) -> None:
        url = safe_url(str(request.url), *secrets)
        url = _scrub_text(url, secrets)
        req_headers = tuple(
            (k, _scrub_text("<redacted>" if k.lower() in _REDACTED_VALUES else v, secrets))
            for k, v in request.headers.multi_items()
            if k.lower() not in CREDENTIAL_HEADERS and not _SECRET_NAME.search(k)
        )
        resp_headers = tuple(
            (k, _scrub_text("<redacted>" if k.lower() in _REDACTED_VALUES else v, secrets))
            for k, v in real.headers.multi_items()
            if k.lower() not in CREDENTIAL_HEADERS
        )
        if not reason:
            reason = httpx.codes.get_reason_phrase(real.status_code)
        with self._lock:
            index = 1 + max((int(m.group(1)) for d in self._case_dirs() if (m := re.match(r"(\d+)-", d.name))), default=0)
            name = f"{index:02d}-{request.method.lower()}-{_slug(request.url.path)}"
            ex = Exchange(
                request.method,
                url,
                req_headers,
                scrub(request.content, secrets),
                real.status_code,
                reason,
                resp_headers,
                scrub(body, secrets),
                name,
                complete,
            )
            self._write(self.path / name, ex, secrets)
            self.recorded.append(ex)

    def _case_dirs(self) -> list[Path]:
        return [d for d in self.path.iterdir() if _is_case(d)] if self.path.is_dir() else []

    def _write(self, d: Path, ex: Exchange, secrets: list[str]) -> None:
        d.mkdir(parents=True, exist_ok=True)
        (d / "request_line.txt").write_text(f"{ex.method} {ex.url}\n")
        (d / "request.json").write_bytes(ex.request_body)
        (d / "request_headers.txt").write_text(_headers_text(ex.request_headers))
        (d / "status.txt").write_text(f"{ex.status} {ex.reason}".rstrip() + "\n")
        (d / "headers.txt").write_text(_headers_text(ex.response_headers))
        (d / "response.raw").write_bytes(ex.response_body)
        from .. import __version__

        now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines = [
            f"recorder: allm.testing.recorder (allm {__version__}), mode {self.mode}",
            f"recorded_at: {now}",
            f"provider: {provider_of(ex.url)}",
        ]
        if self.test:
            lines.append(f"test: {self.test}")
        if self.note:
            lines.append(f"exercises: {self.note}")
        lines.append(
            "complete: yes"
            if ex.complete
            else f"complete: no (the client closed the response after {len(ex.response_body)} bytes)"
        )
        lines.append(
            "secrets: credential headers (Authorization, x-api-key, x-goog-api-key, api-key, cookies, any header "
            "named like a key or token) omitted; "
            + (f"{len(secrets)} credential value(s) and their pieces replaced by [redacted] everywhere" if secrets else "no credential was sent")
        )
        lines.append("body: response.raw is the body as the client read it (chunked framing and content encoding undone)")
        (d / "SOURCE.txt").write_text("\n".join(lines) + "\n")

    # -- no match

    def _no_recording(self, request: httpx.Request, key: _Key) -> NoRecording:
        url = safe_url(str(request.url), *_secrets(request.headers, request.url))
        provider = provider_of(url)
        where = f"{request.method} {key.path}" + ("?" + urllib.parse.urlencode(key.query) if key.query else "")
        head = (
            f"no recording matches {where} (to {provider}) in {self.path} "
            f"(mode {self.mode}; {len(self.exchanges)} recorded, {len(self._used)} replayed)"
        )
        same = [i for i, k in enumerate(self._keys) if k.matches(key, self.match == "body")]
        if same:
            msg = (
                f"{head}: all {len(same)} recording(s) of this request were already replayed "
                "(each recording replays once, in order)"
            )
            return NoRecording(
                msg, provider=provider, method=request.method, url=url, path=str(self.path), nearest=self.exchanges[same[-1]].name, diff=""
            )
        sent = _pretty(_normal(request.content, self.ignore))
        best: tuple[tuple[int, int, float], int] | None = None
        for i, k in enumerate(self._keys):
            rec = _pretty(_normal(self.exchanges[i].request_body, self.ignore))
            ratio = difflib.SequenceMatcher(None, rec, sent, autojunk=False).ratio()
            score = (int(k.method == key.method), int(k.path == key.path), ratio)
            if best is None or score > best[0]:
                best = (score, i)
        hint = (
            "\nRecord it: rerun with --allm-record-mode=new_episodes (pytest), or "
            "recording(path, mode='new_episodes'); or change the request back."
        )
        if best is None:
            return NoRecording(
                f"{head}: the folder holds no recording{hint}",
                provider=provider, method=request.method, url=url, path=str(self.path), nearest=None, diff="",
            )
        i = best[1]
        ex = self.exchanges[i]
        k = self._keys[i]
        what = []
        if k.method != key.method:
            what.append(f"method {k.method} != {key.method}")
        if k.path != key.path:
            what.append(f"path {k.path} != {key.path}")
        if k.query != key.query:
            what.append(f"query {urllib.parse.urlencode(k.query)!r} != {urllib.parse.urlencode(key.query)!r}")
        rec = _pretty(_normal(ex.request_body, self.ignore))
        diff = "\n".join(
            difflib.unified_diff(rec, sent, f"recorded {ex.name}", "sent", n=3, lineterm="")
        )
        if diff:
            what.append("body differs")
        body = f"{head}\nnearest: {ex.name} ({'; '.join(what) or 'differs'})" + (f"\n{diff}" if diff else "") + hint
        return NoRecording(
            body, provider=provider, method=request.method, url=url, path=str(self.path), nearest=ex.name, diff=diff
        )


def recording(path: str | Path, mode: Mode | str = "none", **options: Any) -> Recording:
    """A :class:`Recording` of ``path`` in ``mode`` (use it in a ``with`` block)."""
    return Recording(path, mode=mode, **options)
