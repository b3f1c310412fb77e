"""Every ```python block of guides/middleware.md runs, in order, in one namespace (the Redis
ones against the test server), and so does the middleware example."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from typing import Any

from tests.middleware.conftest import ROOT, child_env

GUIDE = ROOT / "guides" / "middleware.md"
GUIDE_REDIS = "redis://localhost:6379/0"


def test_the_guides_blocks_run(redis_url: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    assert len(blocks) == 9
    assert any(GUIDE_REDIS in b for b in blocks)
    logger = logging.getLogger("allm.middleware")
    handlers, level = list(logger.handlers), logger.level
    namespace: dict[str, Any] = {"__name__": "guide"}
    try:
        for i, block in enumerate(blocks):
            exec(compile(block.replace(GUIDE_REDIS, redis_url), f"{GUIDE.name}:block{i}", "exec"), namespace)
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)


def test_the_example_runs() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "middleware_tool_loop.py")], cwd=ROOT, env=child_env(),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "token_budget" in out.stdout and "rate_limit" in out.stdout and "content_filter" in out.stdout
