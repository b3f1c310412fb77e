"""The conversations example runs and checks itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent


def test_support_desk_example() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "conversations_support_desk.py")],
        capture_output=True, text=True, timeout=120, env=env, check=True,
    )
    assert out.stdout.rstrip().endswith("ok")
    assert "Your order is shipped." in out.stdout
