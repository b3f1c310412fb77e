"""The benchmark suite: its wire bytes decode to what it expects, and a quick run writes every figure.

No timing is asserted here (timings depend on the machine); the suite itself checks
every contestant's result against the expected text, so a broken contestant fails
the run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from allm.events import MessageCompleted, TextDelta, ToolCallCompleted, ToolCallDelta
from allm.providers.anthropic import MessagesDecoder
from allm.providers.gemini import GeminiDecoder
from allm.providers.openai import DIALECTS
from allm.providers.openai.chat import ChatDecoder
from benchmarks import wire
from benchmarks.contestants import _FloorParser

ROOT = Path(__file__).resolve().parent.parent


def _chunks(response: bytes) -> list[bytes]:
    """The HTTP chunks of a chunked response (one SSE event each)."""
    head, body = response.split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding: chunked" in head
    out, i = [], 0
    while True:
        j = body.index(b"\r\n", i)
        size = int(body[i:j], 16)
        if size == 0:
            return out
        out.append(body[j + 2 : j + 2 + size])
        i = j + 2 + size + 2


DECODERS = {
    "openai": lambda: ChatDecoder("openai", DIALECTS["openai"]),
    "anthropic": lambda: MessagesDecoder(),
    "gemini": lambda: GeminiDecoder(),
}


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize(("n_text", "n_tool"), [(40, 0), (7, 5), (0, 3)])
def test_wire_streams_decode_to_the_expected_text(provider: str, n_text: int, n_tool: int) -> None:
    dec = DECODERS[provider]()
    events = [ev for c in _chunks(wire.BUILDERS[(provider, True)](n_text, n_tool)) for ev in dec.feed(c)]
    events += dec.close()
    text = "".join(ev.delta for ev in events if type(ev) is TextDelta)
    args = "".join(ev.arguments_delta for ev in events if type(ev) is ToolCallDelta)
    assert (text, args) == wire.expected(n_text, n_tool, provider)
    done = events[-1]
    assert type(done) is MessageCompleted
    assert done.finish_reason == ("tool_calls" if n_tool else "stop")
    calls = [ev for ev in events if type(ev) is ToolCallCompleted]
    assert len(calls) == (n_tool if provider == "gemini" else 1 if n_tool else 0)
    assert all(c.tool_call.parse_error is None for c in calls)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_the_floor_parser_reads_the_same_streams(provider: str) -> None:
    p = _FloorParser(provider)
    for c in _chunks(wire.BUILDERS[(provider, True)](30, 4)):
        p.feed(c)
    assert p.result() == wire.expected(30, 4, provider)


def test_the_floor_parser_rejects_a_stream_without_its_end() -> None:
    p = _FloorParser("openai")
    for c in _chunks(wire.BUILDERS[("openai", True)](5, 0))[:-1]:
        p.feed(c)
    with pytest.raises(RuntimeError, match="terminal marker"):
        p.result()


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_wire_bodies_decode_to_the_expected_text(provider: str) -> None:
    from allm.fold import Collector
    from allm.providers import Anthropic, Gemini, OpenAI

    adapter = {"openai": OpenAI(api="chat"), "anthropic": Anthropic(), "gemini": Gemini()}[provider]
    import allm

    call = adapter.encode(allm.request("hi", model=wire.MODEL[provider]), stream=False)
    body = wire.BUILDERS[(provider, False)](25, 0).split(b"\r\n\r\n", 1)[1]
    resp = Collector().fold(adapter.decode_body(call, body))
    assert resp.output_text == wire.expected(25, 0)[0]
    assert resp.finish_reason == "stop"


def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--skip", "openai,anthropic,litellm", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    text = out.read_text()
    assert text.startswith("# allm benchmark results")
    assert "CPUs, loadavg before" in text and "Python 3." in text and "httpx " in text
    for heading in ("## Targets", "## 1. Streaming", "## 1b. Streaming tool calls", "## 2. Plain requests",
                    "## 3. Concurrency", "## 4. Cold import", "## 5. Storing a thread", "## 6. Tool loop",
                    "## 7. Telemetry overhead"):
        assert heading in text, heading
    for provider in ("OpenAI chat", "Anthropic", "Gemini"):
        for mode in ("sync", "async"):
            assert f"| floor · {provider} · {mode} |" in text
            assert f"| allm · {provider} · {mode} |" in text
    assert "| `import allm` |" in text
    assert "| floor: orjson / pickle of plain dicts |" in text
    for row in ("| floor + the handler on a `ThreadPoolExecutor` thread", "| floor + the handler on a thread from an event loop"):
        line = next(line for line in text.splitlines() if line.startswith(row))
        assert "error" not in line and "x |" in line, line
    assert "Failures" not in text
    assert "| stream · OpenAI chat · sync |" in text and "the OpenTelemetry SDK alone" in text
    # Every allm row carries a ratio to the floor.
    allm_rows = [line for line in text.splitlines() if line.startswith("| allm")]
    assert allm_rows and all("x |" in line for line in allm_rows)


def test_the_handoff_floor_runs_each_way_and_refuses_another() -> None:
    from benchmarks import values

    for handoff in ("thread", "asyncio"):
        assert 0 < values.loop_floor(2, handoff) < 1
    with pytest.raises(ValueError, match="unknown handoff"):
        values.loop_floor(2, "process")
