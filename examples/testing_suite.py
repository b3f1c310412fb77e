"""Runs the example test suite in examples/testing/ (an agent and its pytest tests) and checks it.

Run it: ``python examples/testing_suite.py``. No key, no network. The suite uses allm's
pytest plugin (loaded by pytest when allm is installed; this runner loads it by name
otherwise): a scripted Fake, a function Fake, ``auto()``, a replayed recording of the
local SmolLM2 model, and the guard against real requests. See ``guides/testing.md``.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITE = HERE / "testing"


def main() -> None:
    installed = any(ep.value == "allm.testing.pytest_plugin" for ep in importlib.metadata.entry_points(group="pytest11"))
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(SUITE)]
    if not installed:
        args[3:3] = ["-p", "allm.testing.pytest_plugin"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    env.pop("ALLM_ALLOW_REQUESTS", None)
    proc = subprocess.run(args, cwd=SUITE, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"5 passed in [\d.]+s", summary), summary
    print(f"ok  examples/testing: {summary}")


if __name__ == "__main__":
    main()
