"""Shared test helpers: recorded traffic, byte-splitting strategies, the live local server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import strategies as st

FIXTURES = Path(__file__).parent / "fixtures"
TEMPLATES = Path(__file__).parent / "templates"


# ------------------------------------------------------------------------------ recorded cases


@attrs.frozen
class Case:
    """One recorded exchange from ``tests/fixtures/<provider>/<case>/``."""

    name: str
    status: int
    headers: dict[str, str]
    body: bytes
    request: Any
    request_line: str

    @property
    def ok(self) -> bool:
        return self.status < 400


def _parse_headers(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


def load_case(provider: str, name: str) -> Case:
    d = FIXTURES / provider / name
    status = int((d / "status.txt").read_text().split()[0])
    req_text = (d / "request.json").read_bytes() if (d / "request.json").exists() else b""
    request = orjson.loads(req_text) if req_text.strip() else None
    return Case(
        name,
        status,
        _parse_headers((d / "headers.txt").read_text()) if (d / "headers.txt").exists() else {},
        (d / "response.raw").read_bytes(),
        request,
        (d / "request_line.txt").read_text().strip() if (d / "request_line.txt").exists() else "",
    )


def case_names(provider: str, prefix: str = "") -> list[str]:
    return sorted(p.name for p in (FIXTURES / provider).iterdir() if p.is_dir() and p.name.startswith(prefix))


@attrs.frozen
class Capture:
    """A raw llama-server capture: request line, request body, status, headers, de-chunked body."""

    name: str
    method: str
    path: str
    request: Any
    status: int
    headers: dict[str, str]
    body: bytes


def load_capture(name: str) -> Capture:
    d = FIXTURES / "llama-server"
    req = (d / f"{name}.request.http").read_bytes()
    head, _, req_body = req.partition(b"\r\n\r\n")
    if not _:
        head, _, req_body = req.partition(b"\n\n")
    first = head.split(b"\n", 1)[0].decode().split()
    raw = (d / f"{name}.response.raw").read_bytes()
    rhead = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(rhead[0].split()[1])
    try:
        request = orjson.loads(req_body) if req_body.strip() else None
    except orjson.JSONDecodeError:
        request = req_body
    return Capture(
        name, first[0], first[1], request, status, _parse_headers("\n".join(rhead[1:])), (d / f"{name}.response.body").read_bytes()
    )


def capture_names(prefix: str = "") -> list[str]:
    return sorted(
        p.name[: -len(".response.body")]
        for p in (FIXTURES / "llama-server").glob("*.response.body")
        if p.name.startswith(prefix)
    )


# ------------------------------------------------------------------------------ byte splitting


@st.composite
def splits(draw: Any, data: bytes, max_cuts: int = 40) -> list[bytes]:
    """``data`` cut at arbitrary points (including inside multi-byte characters and CRLFs)."""
    if not data:
        return [data]
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=max_cuts))))
    out, prev = [], 0
    for c in cuts:
        out.append(data[prev:c])
        prev = c
    out.append(data[prev:])
    return out


def feed_all(decoder: Any, parts: list[bytes]) -> list[Any]:
    events: list[Any] = []
    for p in parts:
        events.extend(decoder.feed(p))
    events.extend(decoder.close())
    return events


# ------------------------------------------------------------------------------ live server


def _live_required() -> bool:
    return os.environ.get("ALLM_REQUIRE_LIVE") == "1"


def _start(**kwargs: Any) -> Iterator[Any]:
    from allm.local import LocalServer, LocalServerError

    try:
        server = LocalServer(**kwargs)
    except LocalServerError as exc:
        if _live_required():
            raise
        pytest.skip(f"local llama-server unavailable: {exc}")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def llama_server() -> Iterator[Any]:
    """A real llama-server with SmolLM2 on a free loopback port, for the whole session."""
    template = TEMPLATES / "hermes_chatml.jinja"
    yield from _start(chat_template_file=str(template) if template.exists() else None)


@pytest.fixture(scope="session")
def llama_embeddings_server() -> Iterator[Any]:
    """A real llama-server in embeddings mode."""
    yield from _start(embeddings=True)
