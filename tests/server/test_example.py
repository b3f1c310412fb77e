"""``examples/server.py`` runs and asserts what it shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_server_example_runs() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "server.py")], cwd=ROOT, capture_output=True,
                          timeout=120, check=False, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    out = proc.stdout.decode()
    assert out.rstrip().endswith("ok") and "hosted tool: add" in out
