"""A stored session loads only as itself: it keeps its id (data without one is refused, not
given a new id) and names a schema version this allm knows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

import allm
from allm import codec
from allm.errors import ValidationError

STORED = Path(__file__).parent / "fixtures" / "stored"


def _stored() -> dict[str, Any]:
    session = allm.Session.new(allm.Thread([allm.user("hi")]))
    data: dict[str, Any] = orjson.loads(session.to_json())
    return data


def test_a_session_round_trips_with_its_id() -> None:
    data = _stored()
    assert allm.Session.from_json(orjson.dumps(data)).id == data["value"]["id"]


def test_a_stored_session_without_id_is_refused() -> None:
    data = _stored()
    del data["value"]["id"]
    for load in (lambda: allm.Session.from_json(orjson.dumps(data)), lambda: codec.from_dict(data),
                 lambda: codec.loads(orjson.dumps(data), allm.Session)):
        with pytest.raises(ValidationError) as ei:
            load()
        assert ei.value.reason == "invalid_session"
        assert "has no id" in ei.value.message


@pytest.mark.parametrize("version", [-1, 0, 2, 99, "1", 1.0, True, None])
def test_an_unknown_schema_version_is_refused(version: Any) -> None:
    data = _stored()
    data["allm_schema"] = version
    with pytest.raises(ValidationError) as ei:
        allm.Session.from_json(orjson.dumps(data))
    assert ei.value.reason == "invalid_session" and "allm schema" in ei.value.message
    with pytest.raises(ValidationError) as ei2:
        codec.from_dict({**codec.to_dict(allm.user("x")), "allm_schema": version})
    assert ei2.value.reason == "invalid_request"


def test_a_value_inside_that_its_class_refuses_names_why() -> None:
    data = _stored()
    data["value"]["thread"]["messages"][0]["tool_calls"] = [{"id": "c1", "name": "f"}]  # on a user message
    with pytest.raises(ValidationError) as ei:
        allm.Session.from_json(orjson.dumps(data))
    assert ei.value.reason == "invalid_session" and "a user message cannot carry tool_calls" in ei.value.message


def test_every_stored_fixture_still_loads() -> None:
    files = sorted(STORED.glob("*.json"))
    assert files
    for f in files:
        codec.loads(f.read_bytes())
