"""``open(card=...)`` through the profile registry: a card name, a Card, a resolved Profile
(explicit settings over the model's), the card's tools picked from the conversation's."""

from __future__ import annotations

from typing import Any

import pytest

import allm
from allm.conversations import ToolGroup
from allm.errors import ValidationError
from allm.profiles import ProfileError, Profiles
from allm.stores import MemoryStore
from allm.testing import assert_sent
from tests.conversations.helpers import WAIT

REGISTRY = Profiles.loads(
    """
[models.echo]
provider = "fake"
temperature = 0.5
top_p = 0.9
max_tokens = 64

[prompts]
brief = "Be brief."

[cards.helper]
model = "echo"
prompt = "brief"
tools = ["lookup"]

[cards.plain]
model = "echo"
system = "You are plain."
"""
)


def tool(name: str) -> allm.Tool:
    return allm.tool(name, name.title(), {"type": "object", "properties": {}}, handler=lambda a: name)


def sent_to(convs: allm.Conversations, id: str) -> Any:
    """The Fake behind a conversation (what its model calls received)."""
    return convs._core.live[id].engine.adapter


@pytest.fixture
def convs() -> Any:
    with allm.Conversations(store=MemoryStore(), profiles=REGISTRY) as manager:
        yield manager


def test_a_card_name_opens_with_its_model_prompt_settings_and_tools(convs: allm.Conversations) -> None:
    convs.open("c1", card="helper", tools=[tool("lookup"), tool("other")])
    assert [(m.role, m.text) for m in convs.messages("c1")] == [("system", "Be brief.")]
    assert convs.talk("c1", "hi", timeout=WAIT).text == "(fake) you said: hi"
    assert_sent(sent_to(convs, "c1"), thread=[allm.system("Be brief."), "hi"], tools=["lookup"], temperature=0.5, top_p=0.9, max_tokens=64)


def test_a_card_that_names_no_tools_offers_all_of_them_groups_included(convs: allm.Conversations) -> None:
    grouped = allm.tool("grouped", "G", {"type": "object", "properties": {}}, handler=lambda a, context: context["user"])
    convs.open("c1", card=REGISTRY.card("plain"), tools=[tool("a"), ToolGroup([grouped], {"user": "ann"}, name="g")])
    convs.talk("c1", "hi", timeout=WAIT)
    assert_sent(sent_to(convs, "c1"), tools=["a", "grouped"])
    assert convs.messages("c1")[0].text == "You are plain."


def test_explicit_settings_win_over_the_profile(convs: allm.Conversations) -> None:
    profile = REGISTRY.resolve(card="plain", temperature=0.0, seed=3)
    convs.open("c1", card=profile)
    convs.talk("c1", "hi", timeout=WAIT)
    assert_sent(sent_to(convs, "c1"), temperature=0.0, top_p=0.9, seed=3, max_tokens=64)


def test_a_reopened_conversation_can_take_a_card_too(convs: allm.Conversations) -> None:
    convs.open("c1", card="plain")
    convs.talk("c1", "one", timeout=WAIT)
    convs.close("c1")
    convs.reopen("c1", card="helper", tools=[tool("lookup")])
    convs.talk("c1", "two", timeout=WAIT)
    assert [m.text for m in convs.messages("c1")] == ["You are plain.", "one", "(fake) you said: one", "two", "(fake) you said: two"]
    assert_sent(sent_to(convs, "c1"), tools=["lookup"])


def test_card_errors(convs: allm.Conversations) -> None:
    with pytest.raises(ProfileError) as e:
        convs.open("c1", card="nobody")
    assert e.value.reason == "unknown_name" and "nobody" in e.value.message
    with pytest.raises(ProfileError) as e:
        convs.open("c1", card="helper", tools=[tool("other")])  # the card's tool is not given
    assert e.value.reason == "unknown_name" and "lookup" in e.value.message
    with pytest.raises(ValidationError) as e2:
        convs.open("c1", card="plain", engine=allm.testing.fake_engine(["x"]))
    assert e2.value.reason == "invalid_request"
    assert convs.list() == []
    with allm.Conversations() as bare:
        with pytest.raises(ValidationError) as e2:
            bare.open("c1", card="plain")
        assert e2.value.reason == "invalid_request" and "profiles=" in e2.value.message
    with pytest.raises(ValidationError):
        allm.Conversations(profiles={"models": {}})  # type: ignore[arg-type]
