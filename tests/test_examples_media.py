"""The structured-output, vision and image examples run and assert what they show."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("name", ["vision_request.py", "images_fake.py"])
def test_example_runs(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    assert capsys.readouterr().out.rstrip().endswith("ok")


def test_structured_output_example_without_a_local_server(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The Fake part runs; the local-model part says how to get one and the example exits 0.
    monkeypatch.setenv("ALLM_LLAMA_SERVER", "/nonexistent/llama-server")
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(EXAMPLES / "structured_output.py"), run_name="__main__")
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "after a re-ask: Capital(city='Paris', country='France')" in out and "local model skipped" in out
    assert out.rstrip().endswith("ok")
