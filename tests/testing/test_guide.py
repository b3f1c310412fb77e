"""Every ```python block of guides/testing.md runs.

Blocks that define ``test_`` functions are pytest modules: they run in an inner pytest
session with the plugin. The others run in order in one namespace, in a scratch folder.
The block that records the local model needs llama-server; the test module that replays
its recording runs after it, on a copy of that recording.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.testing.helpers import PLUGIN, ROOT

pytest_plugins = ["pytester"]

GUIDE = (ROOT / "guides" / "testing.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", GUIDE, re.S)


def _live_available() -> bool:
    from allm.local import LocalServer, LocalServerError

    try:
        LocalServer()
    except LocalServerError:
        if os.environ.get("ALLM_REQUIRE_LIVE") == "1":
            raise
        return False
    return True


def test_the_guide_has_blocks_of_both_kinds() -> None:
    assert len(BLOCKS) >= 7
    assert sum("def test_" in b for b in BLOCKS) == 2, [b[:60] for b in BLOCKS]


def test_every_block_runs(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    live = _live_available()
    monkeypatch.chdir(pytester.path)
    namespace: dict[str, Any] = {"__name__": "guide"}
    ran = 0
    for i, block in enumerate(BLOCKS):
        if "LocalServer" in block and not live:
            continue
        if "def test_" in block:
            name = f"test_block{i}"
            if "allm_recording" in block:
                if not live:
                    continue
                shutil.copytree(pytester.path / "recordings" / "capital", pytester.path / "recordings" / name / "test_capital")
            pytester.makepyfile(**{name: block})
            result = pytester.runpytest(*PLUGIN, "-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function", f"{name}.py")
            n = len(re.findall(r"^def test_", block, re.M))
            result.assert_outcomes(passed=n)
        else:
            exec(compile(block, f"guides/testing.md:block{i}", "exec"), namespace)
        ran += 1
    assert ran == len(BLOCKS) if live else ran >= len(BLOCKS) - 2


def test_the_tables_name_real_settings() -> None:
    for name in ("allm_allow_requests", "allm_allow_hosts", "allm_record_mode", "allm_recordings"):
        assert name in GUIDE
        assert f'"{name}"' in Path(ROOT / "allm" / "testing" / "pytest_plugin.py").read_text()
    for flag in ("--allm-block-requests", "--allm-record-mode"):
        assert flag in GUIDE and flag in (ROOT / "allm" / "testing" / "pytest_plugin.py").read_text()
