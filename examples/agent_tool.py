"""Hand the joint graph to an agent as a tool, then look at what the pipeline did.

The agent (LangGraph's create_react_agent) calls the tool; the tool runs the graph and answers
with the entities (with offsets) and triplets. Runs offline: scripted fake models stand in for
the agent's chat model and for the stage models. Writes agent_tool.html (the review page).

    python examples/agent_tool.py
"""

from __future__ import annotations

import json

from langchain_core.messages import AIMessage, ToolMessage
from langgraph.prebuilt import create_react_agent

from samalign import RunContext, as_tool, build_joint_graph, visualize
from samalign.testing.fakes import ScriptedToolCaller, fake_stage_models

TEXT = "John Smith works for IBM in Armonk ."

stage_models = fake_stage_models(
    {
        "anchor": '{"person": ["John Smith"], "organization": ["IBM"], "location": ["Armonk"]}',
        "explorer": '{"person": ["John Smith"], "organization": ["IBM", "Armonk"]}',
        "archetype": '{"Person": ["John Smith"], "Organization": ["IBM"], "Location": ["Armonk"]}',
        "calibrate": '{"John Smith": "person", "IBM": "organization", "Armonk": "location"}',
        "relations_forward": json.dumps(
            [{"subject": "John Smith", "relations": [{"relation": "work for", "object": "IBM"}]}]
        ),
        "relations_reverse": "[]",
    }
)
tool = as_tool(build_joint_graph(), RunContext("conll04", stage_models))

if __name__ == "__main__":
    agent_model = ScriptedToolCaller(
        replies=[
            AIMessage(
                content="", tool_calls=[{"name": tool.name, "args": {"text": TEXT}, "id": "1"}]
            ),
            AIMessage(content="John Smith works for IBM."),
        ]
    )
    agent = create_react_agent(agent_model, [tool])
    final = agent.invoke({"messages": [("user", f"Who works where? {TEXT}")]})
    [answer] = [m for m in final["messages"] if isinstance(m, ToolMessage)]
    print("tool answer:", answer.content)
    print("agent:", final["messages"][-1].content)
    visualize(answer.artifact).save("agent_tool.html")
    print("review page: agent_tool.html")
