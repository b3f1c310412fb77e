"""Every ```python block of every guide runs: a guide's blocks run in order, in one namespace,
as a reader would paste them into one session (top-level ``await`` allowed), in a scratch
folder, with the provider key variables removed and real requests blocked (loopback servers
pass).

- A guide whose blocks need something started first (a Redis, an MCP server) says so in its
  own test, which runs its blocks; such guides are listed in :data:`OWN_TESTS` and are not run
  here.
- A guide that calls a real provider (``OpenAI()``, ``Anthropic()``, ``Gemini()``) runs against
  that provider's recorded answers in ``tests/fixtures/`` (:data:`REPLAYS`), replayed through
  :class:`allm.testing.Recording`: the same adapter, the same transport, real bytes, no key.
  Every recording listed must be replayed, and a request no recording matches fails the test.
- A guide in :data:`LIVE` starts the local model itself (``allm.local.LocalServer``); it is
  skipped when llama-server or SmolLM2 is not installed, unless ``ALLM_REQUIRE_LIVE=1``.
- A block that cannot run without a provider's key is preceded by ``<!-- not run: ... -->``
  naming why and followed by a runnable block doing the same without one (against the Fake,
  or building the request without sending it); this test counts them (:data:`NOT_RUN`),
  still compiles them, and fails if a guide has no runnable block at all.
"""

from __future__ import annotations

import ast
import asyncio
import ipaddress
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from allm.local import LocalServerError, find_model, find_server_binary
from allm.testing import Recording, block_requests

ROOT = Path(__file__).resolve().parent.parent
GUIDES = sorted((ROOT / "guides").glob("*.md"))
FIXTURES = ROOT / "tests" / "fixtures"

#: Guides whose blocks run under their own test (with the servers they need).
OWN_TESTS: dict[str, str] = {
    "mcp.md": "tests/mcp/test_guide.py",
    "middleware.md": "tests/middleware/test_guide.py",
    "stores.md": "tests/stores/test_guide.py",
    "testing.md": "tests/testing/test_guide.py",
    "workers.md": "tests/workers/test_guide.py",
}


@attrs.frozen
class Replay:
    """Recorded exchanges (``tests/fixtures/<provider>/<case>``) a guide's calls get, in order;
    ``keys``: key variables set (to a placeholder) so the key chain finds one; ``ignore``: JSON
    body fields left out of matching (what allm sends differently from the client that
    recorded); ``match="path"`` matches method and path only (a guide's own prompt answered
    with another prompt's recording: the endpoint and the decoding are checked, not the body)."""

    cases: tuple[str, ...]
    keys: tuple[str, ...]
    ignore: tuple[str, ...] = ()
    match: str = "body"


class _ProviderReplay(Recording):
    """A recording that replays calls to providers and lets requests to this machine through
    (the local model, a web server a guide starts)."""

    def handle(self, request: httpx.Request, send: Callable[[httpx.Request], httpx.Response]) -> httpx.Response:
        return send(request) if _loopback(request.url.host) else super().handle(request, send)

    async def ahandle(
        self, request: httpx.Request, send: Callable[[httpx.Request], Awaitable[httpx.Response]]
    ) -> httpx.Response:
        return await send(request) if _loopback(request.url.host) else await super().ahandle(request, send)


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: Guides that call real providers, and the recorded answers they get.
REPLAYS: dict[str, Replay] = {
    "getting_started.md": Replay(
        ("openai-chat/stream-text-include-usage-2",) * 2,
        keys=("OPENAI_API_KEY",),
        match="path",  # its prompts are the guide's own; the answers are a recorded gpt-4.1-nano stream
    ),
    "provider_anthropic.md": Replay(
        ("anthropic/stream-text",),
        keys=("ANTHROPIC_API_KEY",),
        ignore=("model", "max_tokens"),  # recorded for claude-haiku-4-5-20251001 with another client's max_tokens
    ),
    "provider_gemini.md": Replay(("gemini/stream-sse-text",), keys=("GEMINI_API_KEY",)),
    "embeddings_and_images.md": Replay(
        ("openai-misc/embeddings-multiple-inputs", "openai-misc/models-list"),
        keys=("OPENAI_API_KEY",),
        ignore=("encoding_format",),  # allm asks for base64 vectors; the recording's client did not
    ),
}

#: Guides that start the local model (llama-server with SmolLM2).
LIVE: frozenset[str] = frozenset({"getting_started.md"})

#: How many blocks of each guide are marked ``<!-- not run: ... -->``.
NOT_RUN: dict[str, int] = {
    "structured_output.md": 1,  # generate_object on OpenAI; the same on the Fake follows it
    "embeddings_and_images.md": 1,  # gpt-image-1 calls; the same on the Fake follows them
    "provider_openai_responses.md": 1,  # a stored response named by the next call; what it sends follows
    "vision.md": 1,  # an image sent to Gemini; the same request to the Fake follows it
}

#: What a guide's namespace holds once its blocks ran (beyond the blocks' own asserts).
CHECKS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "getting_started.md": lambda ns: bool(ns["resp"].warnings) and ns["thread"].last.text == "18 °C.",
    "tools.md": lambda ns: ns["result"].metadata["structured_finalize"] == {"pass_1_halted": "completed"},
    "sessions.md": lambda ns: ns["session"].status == "completed",
}

PyCF_ALLOW_TOP_LEVEL_AWAIT = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT

_BLOCK = re.compile(r"(<!--\s*not run:[^>]*-->\s*)?```python\n(.*?)```", re.S)
_KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENROUTER_API_KEY")


def guide_blocks(path: Path) -> list[tuple[bool, str]]:
    """``(runs, code)`` for each python block of the guide at ``path``, in order."""
    return [(m.group(1) is None, m.group(2)) for m in _BLOCK.finditer(path.read_text())]


def run_blocks(path: Path, namespace: dict[str, Any] | None = None) -> int:
    """Run the guide's runnable blocks in one namespace (top-level ``await`` allowed); how many ran."""
    ns: dict[str, Any] = {"__name__": f"guide_{path.stem}"} if namespace is None else namespace
    ran = 0
    for i, (runs, code) in enumerate(guide_blocks(path)):
        compiled = compile(
            code, f"{path.name}:block{i + 1}", "exec", flags=PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )
        if not runs:
            continue  # compiled all the same: a block not run still parses
        result = eval(compiled, ns)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
        ran += 1
    return ran


def _recording(replay: Replay, folder: Path) -> Recording:
    """A recording folder holding ``replay``'s cases, numbered in call order."""
    for i, case in enumerate(replay.cases, 1):
        shutil.copytree(FIXTURES / case, folder / f"{i:02d}-{case.replace('/', '-')}")
    return _ProviderReplay(folder, mode="none", match=replay.match, ignore=replay.ignore)


def _params() -> list[object]:
    return [
        pytest.param(p, id=p.name, marks=[pytest.mark.live] if p.name in LIVE else [])
        for p in GUIDES
        if p.name not in OWN_TESTS
    ]


@pytest.mark.parametrize("path", _params())
def test_guide_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if path.name in LIVE and os.environ.get("ALLM_REQUIRE_LIVE") != "1":
        try:  # the guide starts the local model itself: skip when it is not installed
            find_server_binary(), find_model()
        except LocalServerError as exc:
            pytest.skip(str(exc))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for name in _KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    blocks = guide_blocks(path)
    assert blocks, f"{path.name} has no python block"
    assert sum(not runs for runs, _ in blocks) == NOT_RUN.get(path.name, 0), (
        "the not-run blocks changed: update NOT_RUN"
    )
    for i, (runs, _) in enumerate(blocks):
        assert runs or (i + 1 < len(blocks) and blocks[i + 1][0]), (
            f"block {i + 1} is not run and no runnable block follows it"
        )
    replay = REPLAYS.get(path.name)
    ns: dict[str, Any] = {"__name__": f"guide_{path.stem}"}
    with block_requests(why=f"{path.name} reached a real provider; replay it (REPLAYS in tests/test_guides.py)"):
        if replay is None:
            ran = run_blocks(path, ns)
        else:
            for name in replay.keys:
                monkeypatch.setenv(name, "replayed-no-key")
            with _recording(replay, tmp_path / "recording") as recording:
                ran = run_blocks(path, ns)
            assert not recording.unplayed, [e.name for e in recording.unplayed]
    assert ran >= 1, f"{path.name} has python blocks and none runs"
    check = CHECKS.get(path.name)
    assert check is None or check(ns)


def test_every_guide_is_covered() -> None:
    names = {p.name for p in GUIDES}
    for path in GUIDES:  # a block fenced otherwise than ```python would escape every runner
        fences = re.findall(r"^```[ \t]*(\w*)", path.read_text(), re.M)
        assert not [f for f in fences if f.lower() in ("py", "python3", "pycon") or f == "Python"], path.name
    assert set(OWN_TESTS) <= names and set(REPLAYS) <= names and names >= LIVE and set(NOT_RUN) <= names
    assert not (set(OWN_TESTS) & (set(REPLAYS) | LIVE))
    for replay in REPLAYS.values():
        for case in replay.cases:
            assert (FIXTURES / case / "response.raw").is_file(), case


@pytest.mark.parametrize("guide", sorted(OWN_TESTS))
def test_guides_with_their_own_tests_run_them(guide: str) -> None:
    test = ROOT / OWN_TESTS[guide]
    assert (ROOT / "guides" / guide).is_file() and test.is_file(), (guide, test)
    source = test.read_text()
    assert re.search(rf'"guides"\s*\)?\s*/\s*"{re.escape(guide)}"', source), f"{test} does not read guides/{guide}"
    assert "```python" in source and re.search(r"\bexec\(", source), f"{test} does not run the blocks of {guide}"
