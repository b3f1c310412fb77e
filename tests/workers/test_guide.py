"""Every ```python block of guides/workers.md runs, in order, in one namespace, against the
test redis-server; and the workers example runs and checks itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis

from tests.workers.test_queues import db_url

ROOT = Path(__file__).parent.parent.parent
GUIDE = ROOT / "guides" / "workers.md"
GUIDE_REDIS = "redis://localhost:6379/0"


def test_the_guides_blocks_run(redis_server: Any) -> None:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    assert len(blocks) == 3
    url = db_url(redis_server.url, 15)
    redis.Redis.from_url(url).flushdb()
    namespace: dict[str, Any] = {"__name__": "guide"}
    for i, block in enumerate(blocks):
        assert GUIDE_REDIS in block or i > 1
        exec(compile(block.replace(GUIDE_REDIS, url), f"{GUIDE.name}:block{i}", "exec"), namespace)
    assert namespace["worker"].load("ses_44")[0].status == "awaiting_tools"


def test_the_example_runs(redis_server: Any) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "workers_redis_queues.py")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=180)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("completed") >= 3 and "keys anywhere in Redis (broker, results, store): 0" in out.stdout
