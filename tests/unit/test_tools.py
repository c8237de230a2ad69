"""The graphs as LangChain tools: argument schema, compact answer, errors, a ReAct agent."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.prebuilt import create_react_agent

from samalign import as_tool
from samalign.graphs import RunContext, build_document_graph, build_joint_graph, build_ner_graph
from samalign.graphs.tools import restrict_labels
from samalign.prompts import load_domain
from samalign.testing.fakes import ScriptedChatModel, ScriptedToolCaller, fake_stage_models

TEXT = "John Smith works for IBM in Armonk ."


@pytest.fixture
def context(armonk_scripts: dict[str, Any]) -> Callable[[], RunContext]:
    """``context()``: a fresh conll04 context whose fake models answer :data:`TEXT`."""
    return lambda: RunContext(load_domain("conll04"), fake_stage_models(armonk_scripts))


def test_ner_tool_schema_and_compact_answer(context: Callable[[], RunContext]) -> None:
    tool = as_tool(build_ner_graph(), context())
    assert tool.name == "extract_entities"
    schema = tool.args_schema.model_json_schema()  # type: ignore[union-attr]
    assert set(schema["properties"]) == {"text", "labels"} and schema["required"] == ["text"]
    assert "Peop" in tool.description and "offsets" in tool.description
    message = tool.invoke(
        {"type": "tool_call", "id": "c1", "name": tool.name, "args": {"text": TEXT}}
    )
    assert isinstance(message, ToolMessage)
    answer = json.loads(message.content)  # type: ignore[arg-type]
    assert answer == {
        "entities": [
            {"text": "John Smith", "label": "Peop", "start": 0, "end": 10},
            {"text": "IBM", "label": "Org", "start": 21, "end": 24},
            {"text": "Armonk", "label": "Loc", "start": 28, "end": 34},
        ],
        "notes": [],
    }
    for e in answer["entities"]:
        assert TEXT[e["start"] : e["end"]] == e["text"]
    assert message.artifact["entities"][0].span.text == "John Smith"  # the full typed result


def test_joint_tool_answers_triplets_and_offers_domains(context: Callable[[], RunContext]) -> None:
    tool = as_tool(build_joint_graph(), context(), domains=["crossner_ai"])
    assert tool.name == "extract_entities_and_relations"
    schema = tool.args_schema.model_json_schema()  # type: ignore[union-attr]
    domain_schema = json.dumps(schema["properties"]["domain"])
    assert "conll04" in domain_schema and "crossner_ai" in domain_schema
    answer = json.loads(tool.invoke({"text": TEXT}))
    assert answer["triplets"] == [
        {
            "head": {"text": "John Smith", "label": "Peop", "start": 0, "end": 10},
            "relation": "Work_For",
            "tail": {"text": "IBM", "label": "Org", "start": 21, "end": 24},
        }
    ]


def test_labels_restrict_what_the_stages_are_asked(armonk_scripts: dict[str, Any]) -> None:
    models = fake_stage_models(armonk_scripts)
    tool = as_tool(build_ner_graph(), RunContext("conll04", models))
    tool.invoke({"text": TEXT, "labels": ["person"]})  # a name works as well as a tag
    chat = models["anchor"].chat_model
    assert isinstance(chat, ScriptedChatModel)
    prompt = str(chat.calls[-1]["messages"][0].content)
    assert "person" in prompt and "organization" not in prompt


def test_restrict_labels_drops_relations_of_removed_types() -> None:
    domain = restrict_labels(load_domain("conll04"), ["Peop", "Org"])
    assert domain.labels == ["Peop", "Org"]
    assert [r.label for r in domain.relation_types] == ["Kill", "Work_For"]


def test_bad_arguments_come_back_as_messages_the_agent_can_read(
    context: Callable[[], RunContext],
) -> None:
    tool = as_tool(build_ner_graph(), context())
    unknown = tool.invoke({"text": TEXT, "labels": ["spaceship"]})
    assert "no entity label 'spaceship'" in unknown and "Peop" in unknown
    assert "empty" in tool.invoke({"text": "   "})
    # no domain argument is offered with one domain: an agent passing one is told so
    assert "domain" in tool.invoke({"text": TEXT, "domain": "crossner_ai"})
    offered = as_tool(build_ner_graph(), context(), domains=["crossner_ai"])
    assert "conll04" in offered.invoke({"text": TEXT, "domain": "mars"})
    too_long = as_tool(build_ner_graph(), context()).invoke({"text": "x " * 2500})
    assert "InputError" in too_long and "document graph" in too_long


def test_document_tool_runs_long_texts(context: Callable[[], RunContext]) -> None:
    tool = as_tool(build_document_graph(build_joint_graph()), context())
    answer = json.loads(tool.invoke({"text": f"{TEXT} {TEXT}"}))
    starts = [e["start"] for e in answer["entities"] if e["text"] == "John Smith"]
    assert starts == [0, len(TEXT) + 1]


async def test_tool_runs_async(context: Callable[[], RunContext]) -> None:
    tool = as_tool(build_ner_graph(), context())
    answer = json.loads(await tool.ainvoke({"text": TEXT}))
    assert [e["text"] for e in answer["entities"]] == ["John Smith", "IBM", "Armonk"]


def test_tool_from_a_json_context_is_rejected_when_invalid() -> None:
    from samalign.errors import ConfigError

    with pytest.raises(ConfigError, match="models"):
        as_tool(build_ner_graph(), {"domain": "conll04", "models": {"servr": "http://x"}})


def test_react_agent_calls_the_tool_and_receives_the_entities(
    context: Callable[[], RunContext],
) -> None:
    agent_model = ScriptedToolCaller(
        replies=[
            AIMessage(
                content="",
                tool_calls=[{"name": "extract_entities", "args": {"text": TEXT}, "id": "call-1"}],
            ),
            AIMessage(content="John Smith (Peop) works for IBM (Org)."),
        ]
    )
    tool = as_tool(build_ner_graph(), context())
    agent = create_react_agent(agent_model, [tool])
    final = agent.invoke({"messages": [("user", f"Who is in: {TEXT}")]})
    assert agent_model.tools == ["extract_entities"]
    tool_messages = [m for m in final["messages"] if isinstance(m, ToolMessage)]
    assert len(tool_messages) == 1 and tool_messages[0].tool_call_id == "call-1"
    received = agent_model.calls[1][-1]  # what the agent model read on its second turn
    assert isinstance(received, ToolMessage)
    entities = json.loads(received.content)["entities"]  # type: ignore[arg-type]
    assert [(e["text"], e["label"], e["start"], e["end"]) for e in entities] == [
        ("John Smith", "Peop", 0, 10),
        ("IBM", "Org", 21, 24),
        ("Armonk", "Loc", 28, 34),
    ]
    assert final["messages"][-1].content.startswith("John Smith (Peop)")
