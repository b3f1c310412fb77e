"""The README stays true: its hello example runs, and its set-up commands exist."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def _block(marker: str) -> str:
    block = README.split(f"<!-- {marker}:", 1)[1]
    code = re.search(r"```python\n(.*?)```", block, re.S)
    assert code is not None
    return code.group(1)


def test_hello_example_runs() -> None:
    exec(compile(_block("hello"), "README.md:hello", "exec"), {})


def test_session_example_runs() -> None:
    import allm

    exec(compile(_block("session"), "README.md:session", "exec"), {"allm": allm})


def test_exactly_two_setup_commands_and_they_exist() -> None:
    section = README.split("## Set up", 1)[1].split("##", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["./scripts/quickstart", "./scripts/test"]
    for c in commands:
        path = ROOT / c
        assert path.is_file() and os.access(path, os.X_OK), c
    assert "pytest" in (ROOT / "scripts" / "test").read_text()
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()
