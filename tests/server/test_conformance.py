"""The official Open Responses compliance suite, unmodified, against a real ``allm serve`` process.

The suite lives in ``../shared/conformance/openresponses/`` (its ``run`` installs bun and zod
from npm on first use, outside the repository). Against the scripted Fakes all 17 tests must
pass. Against the local SmolLM2 route (``allm serve`` with no config) every test a 135M text
model can serve must pass; the others are listed in :data:`SMOLLM2_CANNOT` with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import RIG, ServeProcess, need_local_model

ALL_IDS = [
    "basic-response", "assistant-phase", "response-output-phase-schema", "streaming-response", "websocket-response",
    "websocket-sequential-responses", "websocket-continuation", "websocket-reconnect-store-false-recovery",
    "websocket-previous-response-not-found", "websocket-failed-continuation-evicts-cache", "websocket-compact-new-chain",
    "system-prompt", "tool-calling", "image-input", "multi-turn", "compact-response", "compact-missing-model",
]

#: Tests SmolLM2-135M cannot serve, and why.
SMOLLM2_CANNOT = {
    "image-input": "SmolLM2-135M is a text model: llama-server refuses image input, so the server answers 502",
    "tool-calling": "a 135M model does not reliably choose to call the offered function (it answers in prose)",
}
_SLOW = ("SmolLM2-135M keeps counting past the number asked for ('Count from 1 to 3.'); at a few tokens a "
         "second on 2 shared cores the turn outlasts the suite's fixed 30 s WebSocket turn limit (HTTP has none)")
SMOLLM2_CANNOT.update({i: _SLOW for i in (
    "websocket-response", "websocket-sequential-responses", "websocket-continuation",
    "websocket-failed-continuation-evicts-cache", "websocket-compact-new-chain",
)})
#: What the 135M model must pass.
SMOLLM2_MUST = [i for i in ALL_IDS if i not in SMOLLM2_CANNOT]


def _rig_available() -> None:
    if not RIG.exists():
        pytest.skip(f"the compliance rig is not at {RIG}")
    if shutil.which("npm") is None and not (Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "openresponses-rig").exists():
        pytest.skip("npm is needed for the rig's first install")


def run_suite(base_url: str, model: str, ids: list[str] | None = None, timeout: float = 600) -> dict[str, Any]:
    """The suite's ``--json`` report (``{"summary", "results"}``)."""
    args = [str(RIG), "--base-url", f"{base_url}/v1", "--model", model, "--json"]
    if ids:
        args += ["--filter", ",".join(ids)]
    proc = subprocess.run(args, capture_output=True, timeout=timeout, check=False)
    assert proc.returncode in (0, 1), proc.stderr.decode()[-2000:]
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def _failures(report: dict[str, Any]) -> dict[str, Any]:
    return {r["id"]: r.get("errors") for r in report["results"] if r["status"] != "passed"}


def test_all_17_pass_against_the_fakes(fake_server: ServeProcess) -> None:
    _rig_available()
    report = run_suite(fake_server.url, "fake")
    assert sorted(r["id"] for r in report["results"]) == sorted(ALL_IDS)
    assert _failures(report) == {}
    assert report["summary"] == {"passed": 17, "failed": 0, "skipped": 0, "total": 17}


def test_all_17_pass_with_a_reasoning_model(fake_server: ServeProcess) -> None:
    """The same suite when every answer carries a reasoning item first."""
    _rig_available()
    report = run_suite(fake_server.url, "thinker-1")
    failures = _failures(report)
    assert set(failures) <= {"tool-calling"}, failures  # the thinker never calls tools
    assert report["summary"]["passed"] >= 16


@pytest.mark.live
def test_smollm2_route(tmp_path: Path) -> None:
    """``allm serve`` with no config: the local SmolLM2 llama-server behind every model.

    The tests run one at a time: one llama-server on 2 cores answers one request at a time,
    and the suite gives each WebSocket turn only 30 s when all 17 run at once.
    """
    _rig_available()
    need_local_model()
    server = ServeProcess(None, env={"XDG_DATA_HOME": str(tmp_path)}, startup=180)
    try:
        results: dict[str, Any] = {}
        for test_id in ALL_IDS:
            report = run_suite(server.url, "smollm2", [test_id])
            (r,) = report["results"]
            results[test_id] = r
        passed = sorted(i for i, r in results.items() if r["status"] == "passed")
        failed = {i: r.get("errors") for i, r in results.items() if r["status"] != "passed"}
        print(f"SmolLM2: {len(passed)}/17 passed; not served: {sorted(failed)}")
        assert set(failed) <= set(SMOLLM2_CANNOT), failed
        assert set(SMOLLM2_MUST) <= set(passed)
        assert (tmp_path / "allm" / "server" / "responses.db").exists()  # the default SQLite store
    finally:
        server.stop()
