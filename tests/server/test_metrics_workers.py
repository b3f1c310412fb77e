"""``/metrics`` under ``allm serve --workers N``: whichever worker answers reports every worker's
counts (prometheus_client's multiprocess mode), and the directory they share is made and
removed by ``allm serve`` unless the environment names one."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from allm.server.metrics import MULTIPROC_ENV
from allm.server.serve import shared_metrics
from tests.server.conftest import FAKE_CONFIG, ServeProcess


def _total(text: str, name: str) -> float:
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name)


def _writers(directory: Path) -> set[str]:
    """The processes that have written counters to ``directory`` (files ``counter_<pid>.db``)."""
    return {p.stem.rsplit("_", 1)[1] for p in directory.glob("counter_*.db")}


@pytest.mark.parametrize("given", [True, False], ids=["directory-given", "directory-made"])
def test_any_worker_reports_the_counts_of_all(tmp_path: Path, given: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "server.toml"
    config.write_text(FAKE_CONFIG)
    if given:
        shared = tmp_path / "prometheus"
        shared.mkdir()
        monkeypatch.setenv(MULTIPROC_ENV, str(shared))
    else:
        # allm serve makes its own under the temporary directory, which is this test's here.
        monkeypatch.delenv(MULTIPROC_ENV, raising=False)
        monkeypatch.setenv("TMPDIR", str(tmp_path))
    server = ServeProcess(config, extra=("--workers", "2"))
    if not given:
        made = list(tmp_path.glob("allm-metrics-*"))
        assert len(made) == 1
        shared = made[0]
    try:
        sent = 0
        # A new connection per request, so either worker may take it, until both have answered.
        while sent < 10 or (len(_writers(shared)) < 2 and sent < 300):
            with httpx.Client(base_url=server.url, timeout=30) as http:
                r = http.post("/v1/responses", json={"model": "echo", "input": f"n{sent}"})
            assert r.status_code == 200, r.text
            sent += 1
        assert len(_writers(shared)) == 2, f"one worker answered all {sent} requests"
        for _ in range(8):  # each scrape on a new connection, answered by either worker
            with httpx.Client(base_url=server.url, timeout=30) as http:
                text = http.get("/metrics").text
            assert _total(text, "allm_server_requests_total") == sent
            assert _total(text, "allm_server_request_duration_seconds_count") == sent
            assert _total(text, "allm_server_in_flight") == 0
    finally:
        server.stop()
    assert shared.is_dir() is given  # the environment's directory is its owner's; allm's own is removed


def test_shared_metrics_makes_and_removes_its_own_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with shared_metrics() as made:
        assert os.environ[MULTIPROC_ENV] == made and Path(made).is_dir()
        (Path(made) / "counter_1.db").write_bytes(b"x")
    assert not Path(made).exists() and MULTIPROC_ENV not in os.environ


def test_shared_metrics_keeps_the_environments_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    (tmp_path / "counter_1.db").write_bytes(b"x")
    with shared_metrics() as given:
        assert given == str(tmp_path)
    assert (tmp_path / "counter_1.db").exists() and os.environ[MULTIPROC_ENV] == str(tmp_path)
