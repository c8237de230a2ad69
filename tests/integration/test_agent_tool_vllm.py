"""An agent (LangGraph's create_react_agent) calls the joint graph as a tool, on real vLLM.

The agent's own model is a scripted tool-calling fake (no chat model to spare on CPU); the
tool runs the real graph against the tiny vLLM CPU server, with a JSON run context.
"""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.prebuilt import create_react_agent

from samalign import PipelineOptions, as_tool, build_joint_graph
from samalign.testing.fakes import ScriptedToolCaller

pytestmark = pytest.mark.integration

# relation_schedule="always": the tiny random model rarely finds two entities, and the default
# schedule would skip the relation decoders, which this test wants to see called
FAST = PipelineOptions(
    constrain_mentions=True, max_completion_tokens=192, relation_schedule="always"
)
TEXT = "John Smith works for IBM in Armonk , New York ."


async def test_agent_receives_entities_from_the_real_graph(vllm_server: str) -> None:
    context = {"domain": "conll04", "models": {"server": vllm_server, "timeout": 300}}
    tool = as_tool(build_joint_graph(FAST), context)
    agent_model = ScriptedToolCaller(
        replies=[
            AIMessage(
                content="",
                tool_calls=[{"name": tool.name, "args": {"text": TEXT}, "id": "call-1"}],
            ),
            AIMessage(content="done"),
        ]
    )
    agent = create_react_agent(agent_model, [tool])
    final = await agent.ainvoke({"messages": [("user", f"What is in: {TEXT}")]})
    [message] = [m for m in final["messages"] if isinstance(m, ToolMessage)]
    assert message.status != "error", message.content
    answer = json.loads(message.content)  # type: ignore[arg-type]
    assert set(answer) >= {"entities", "triplets"}
    for entity in answer["entities"]:
        assert TEXT[entity["start"] : entity["end"]] == entity["text"]
    for triplet in answer["triplets"]:
        for arg in (triplet["head"], triplet["tail"]):
            assert TEXT[arg["start"] : arg["end"]] == arg["text"]
    # the agent's model read exactly that answer on its next turn
    assert agent_model.calls[1][-1].content == message.content
    usage = message.artifact["usage"]
    assert usage["anchor"].calls >= 1 and usage["relations_forward"].calls == 1
