"""Fixtures for the worker tests: the private redis-server, and fleets of worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.redis_server import redis_server  # noqa: F401  (the session-scoped fixture)

ROOT = Path(__file__).resolve().parent.parent.parent


class Fleet:
    """Worker processes started with ``command`` (one process group each), logs in files."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.dir = Path(tempfile.mkdtemp(prefix="allm-workers-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, commands: Sequence[Sequence[str]]) -> Fleet:
        for i, cmd in enumerate(commands):
            log = self.dir / f"worker-{i}.log"
            self.logs.append(log)
            with open(log, "wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        list(cmd), cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                        stderr=subprocess.STDOUT, start_new_session=True,
                    )
                )
        return self

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(text in log.read_text(errors="replace") for log in self.logs):
                return
            dead = [i for i, p in enumerate(self.procs) if p.poll() is not None]
            if dead:
                raise AssertionError(f"worker {dead[0]} exited:\n{self.log_text(dead[0])}")
            time.sleep(0.1)
        raise AssertionError(f"workers not ready ({text!r}):\n" + "\n".join(self.log_text(i) for i in range(len(self.logs))))

    def kill(self, i: int) -> None:
        """``kill -9`` worker ``i``."""
        os.kill(self.procs[i].pid, signal.SIGKILL)
        self.procs[i].wait(10)

    def log_text(self, i: int) -> str:
        return self.logs[i].read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)


def worker_env(redis_url: str, keys_file: Path, model_delay: float) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["ALLM_TEST_REDIS"] = redis_url
    env["ALLM_TEST_KEYS"] = str(keys_file)
    env["ALLM_TEST_MODEL_DELAY"] = str(model_delay)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def fleet_factory() -> Iterator[list[Fleet]]:
    fleets: list[Fleet] = []
    yield fleets
    for f in fleets:
        f.stop()


PY = sys.executable
