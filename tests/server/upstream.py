"""The benchmarks' raw-asyncio loopback upstream (benchmarks/server.py) as a subprocess:
OpenAI Chat Completions at ``http://127.0.0.1:<port>/b/<n_text>/<n_tool>/chat/completions``."""

from __future__ import annotations

import subprocess
import sys

from tests.server.procs import ROOT, child_env


class Upstream:
    """``python -m benchmarks.server``; ``base_url(n_text)`` is an OpenAI-compatible base URL
    whose streams carry ``n_text`` text deltas."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.server"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=child_env(), cwd=str(ROOT))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"the loopback upstream did not start: {line!r}")
        self.port = int(line.split()[1])

    def base_url(self, n_text: int = 20, n_tool: int = 0) -> str:
        return f"http://127.0.0.1:{self.port}/b/{n_text}/{n_tool}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
