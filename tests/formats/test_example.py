"""The history formats example runs with no key and checks itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent


def test_history_formats_example() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "history_formats.py")],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "anthropic" in out.stdout and "thinking kept: yes" in out.stdout
    assert "reported: foreign_reasoning" in out.stdout
