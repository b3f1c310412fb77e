"""The example suite in examples/testing/ passes through its runner, offline and with requests blocked."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.testing.helpers import ROOT


def test_the_example_suite_passes() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "testing_suite.py")], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok  examples/testing: 5 passed")


def test_its_recording_is_real_model_traffic_in_the_fixtures_layout() -> None:
    folder = ROOT / "examples" / "testing" / "recordings" / "test_support_agent" / "test_small_talk_with_the_real_model"
    (case,) = folder.iterdir()
    names = sorted(p.name for p in case.iterdir())
    assert names == ["SOURCE.txt", "headers.txt", "request.json", "request_headers.txt", "request_line.txt", "response.raw", "status.txt"]
    assert "server: llama.cpp" in (case / "headers.txt").read_text()
    assert b'"model":"smollm2"' in (case / "response.raw").read_bytes()
