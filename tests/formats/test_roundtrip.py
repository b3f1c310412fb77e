"""Round trips through every history format and every pair of formats (hypothesis).

The laws:

- what every format can hold (``portable_threads``) survives thread -> A -> thread ->
  B -> thread for every pair (A, B), with no warning but Gemini's note that it does not
  keep tool-call ids (the pairing survives; ids are compared by order);
- what a format can hold (its own reasoning, signatures, cache control, phases, image
  detail...) survives that format's round trip with no warning at all;
- nothing is lost silently: for any thread and any pair, if the thread that comes
  back differs (beyond the documented normalisations) a warning was returned.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allm import formats
from allm.types import Thread
from tests import strategies as S
from tests.formats.canon import canon

FORMATS = formats.FORMATS
PROVIDER_FORMATS = [f for f in FORMATS if f != "allm"]
PAIRS = list(itertools.product(FORMATS, FORMATS))
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def through(thread: Thread, fmt: str) -> tuple[Thread, list[formats.FormatWarning]]:
    payload, w1 = formats.to_payload(thread, fmt)
    back, w2 = formats.from_payload(payload, fmt)
    return back, w1 + w2


def _ids_note(w: formats.FormatWarning) -> bool:
    return w.kind == "rewritten" and w.path == "" and "tool-call ids" in w.message


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
@SETTINGS
@given(thread=S.portable_threads)
def test_portable_threads_survive_every_pair(a: str, b: str, thread: Thread) -> None:
    t1, w1 = through(thread, a)
    t2, w2 = through(t1, b)
    assert [w for w in w1 + w2 if not _ids_note(w)] == []
    gemini = "gemini" in (a, b)
    assert canon(t2, (a, b), rename_ids=gemini) == canon(thread, (a, b), rename_ids=gemini)


NATIVE = {
    "anthropic": S.anthropic_threads,
    "gemini": S.gemini_threads,
    "openai_responses": S.responses_threads,
    "openai_chat": S.chat_threads,
    "allm": S.history_threads,
}


@pytest.mark.parametrize("fmt", list(NATIVE))
@SETTINGS
@given(data=st.data())
def test_what_a_format_holds_survives_it_without_warnings(fmt: str, data: st.DataObject) -> None:
    thread = data.draw(NATIVE[fmt])
    back, warnings = through(thread, fmt)
    assert warnings == []
    assert canon(back, (fmt,)) == canon(thread, (fmt,))
    if fmt == "allm":
        assert back == thread  # allm's own format is exact


def _quiet(ws: list[formats.FormatWarning]) -> list[formats.FormatWarning]:
    return [w for w in ws if not _ids_note(w)]


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(thread=S.one_change(S.portable_threads))
def test_nothing_is_lost_silently(a: str, b: str, thread: Thread) -> None:
    """A portable thread with one change: if the change does not survive A -> B, a warning says so."""
    t1, w1 = through(thread, a)
    t2, w2 = through(t1, b)
    gemini = "gemini" in (a, b)
    if canon(t2, (a, b), rename_ids=gemini) != canon(thread, (a, b), rename_ids=gemini):
        assert _quiet(w1 + w2), f"{a} -> {b} changed the thread without a warning"


@pytest.mark.parametrize("fmt", list(NATIVE))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_nothing_is_lost_silently_from_a_formats_own_threads(fmt: str, data: st.DataObject) -> None:
    thread = data.draw(S.one_change(NATIVE[fmt]))
    back, warnings = through(thread, fmt)
    if canon(back, (fmt,)) != canon(thread, (fmt,)):
        assert warnings, f"{fmt} changed the thread without a warning"


@pytest.mark.parametrize("fmt", PROVIDER_FORMATS)
@SETTINGS
@given(thread=S.history_threads)
def test_strict_raises_exactly_when_something_would_be_lost(fmt: str, thread: Thread) -> None:
    payload, warnings = formats.to_payload(thread, fmt)
    if warnings:
        with pytest.raises(formats.FormatError) as exc:
            formats.to_payload(thread, fmt, strict=True)
        assert exc.value.reason == "unrepresentable"
        assert exc.value.warning == warnings[0]
    else:
        assert formats.to_payload(thread, fmt, strict=True) == (payload, [])
