"""At interpreter exit, the process-wide sync HTTP client is closed (its kept-alive
connections end with a close, not as sockets left to the teardown)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import atexit
from allm import _transport

client = _transport.sync_client()
assert _transport.sync_client() is client
atexit._run_exitfuncs()
print(client.is_closed, _transport._sync_client is None)
again = _transport.sync_client()  # a later call makes a new one
print(again is not client and not again.is_closed)
"""


def test_the_sync_client_closes_at_exit() -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", "True"]
