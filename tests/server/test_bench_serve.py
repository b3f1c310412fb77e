"""``python -m benchmarks.serve --quick --no-litellm`` runs and writes every table (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.server.procs import ROOT, child_env


def test_quick_server_benchmark_writes_its_tables(tmp_path: Path) -> None:
    out = tmp_path / "SERVER_RESULTS.md"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.serve", "--quick", "--no-litellm", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=str(ROOT), env=child_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("## Server")
    for row in ("| direct | 1 |", "| direct | 50 |", "| allm serve | 1 |", "| allm serve | 50 |", "| allm serve | 200/s |"):
        assert row in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| allm serve | 1 |")]
    assert rows[0].split("|")[-2].strip() == "0"  # no errors
