"""examples/server_operations.py runs with no key and checks itself."""

from __future__ import annotations

import subprocess
import sys

from tests.server.procs import ROOT, child_env


def test_server_operations_example_runs() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "server_operations.py")], capture_output=True,
                          text=True, timeout=120, env=child_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith("ok")
    assert "rate_limit_exceeded" in proc.stdout
