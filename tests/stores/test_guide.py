"""Every ```python block of guides/stores.md runs (the Redis one against the test server), and
so does the stores example."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from tests.redis_server import RedisServer
from tests.stores.conftest import run_python

ROOT = Path(__file__).parent.parent.parent
GUIDE = ROOT / "guides" / "stores.md"
BLOCKS = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
GUIDE_REDIS = "redis://localhost:6379/0"


def test_the_guide_has_its_blocks() -> None:
    assert len(BLOCKS) == 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_guide_block_runs(index: int, request: pytest.FixtureRequest, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    code = BLOCKS[index]
    if GUIDE_REDIS in code:
        server: RedisServer = request.getfixturevalue("redis_server")
        code = code.replace(GUIDE_REDIS, f"{server.url}?prefix=guide{uuid.uuid4().hex[:8]}:")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{GUIDE.name}:block{index}", "exec"), {"__name__": "guide"})


def test_sqlite_example_runs() -> None:
    out = run_python(str(ROOT / "examples" / "stores_sqlite.py"))
    assert out.returncode == 0, out.stderr
    assert "translate (pid" in out.stdout and "version 5" in out.stdout
