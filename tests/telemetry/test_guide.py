"""Every ```python block of guides/observability.md runs, and so does the observability example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from allm import telemetry

ROOT = Path(__file__).parent.parent.parent
GUIDE = ROOT / "guides" / "observability.md"
BLOCKS = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)


def test_the_guide_has_its_blocks() -> None:
    assert len(BLOCKS) == 6


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_guide_block_runs(index: int) -> None:
    try:
        exec(compile(BLOCKS[index], f"{GUIDE.name}:block{index}", "exec"), {"__name__": "guide"})
    finally:
        assert not telemetry.active  # each block leaves nothing attached


def test_the_example_prints_the_span_tree() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "observability_span_tree.py")],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("invoke_agent [internal,") and "in=113 out=20" in lines[0]
    assert lines[2].startswith("  execute_tool get_weather [internal,") and lines[3].startswith("    weather lookup")
    assert "gen_ai.client.token.usage ({token}) input: count=2 sum=113" in out.stdout and lines[-1] == "ok"
