"""Every ```python block of guides/mcp.md runs, in order, in one namespace, from the
repository root, with the test server over Streamable HTTP at $WEATHER_MCP_URL."""

from __future__ import annotations

import re

import pytest

from .conftest import ROOT, HttpServer, mcp_threads, wait_until

GUIDE = ROOT / "guides" / "mcp.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)


def test_the_guide_has_blocks() -> None:
    assert len(blocks()) >= 6


def test_guide_blocks_run(http_server: HttpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WEATHER_MCP_URL", http_server.url)
    monkeypatch.setenv("WEATHER_MCP_TOKEN", http_server.token)
    namespace: dict[str, object] = {"__name__": "guide"}
    for i, code in enumerate(blocks()):
        exec(compile(code, f"guides/mcp.md:block{i + 1}", "exec"), namespace)
    assert wait_until(lambda: not mcp_threads())
