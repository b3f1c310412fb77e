"""Every python block of guides/conversations.md runs, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

GUIDE = Path(__file__).parent.parent.parent / "guides" / "conversations.md"


def test_the_guides_blocks_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    assert len(blocks) >= 8
    namespace: dict[str, object] = {}
    try:
        for i, block in enumerate(blocks):
            exec(compile(block, f"{GUIDE.name}:block{i}", "exec"), namespace)
    finally:
        convs = namespace.get("convs")
        if convs is not None:
            convs.shutdown()  # type: ignore[attr-defined]
