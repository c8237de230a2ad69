"""Run the joint graph on scripted fake models: no server, no model, no network.

Every stage model is a ``ScriptedChatModel`` that answers from a script: a fixed string, a
list of strings given in turn, or a function of the prompt. This is how samalign's own unit
tests drive the graphs (docs/testing.md explains what each stage receives and which answer
shapes it accepts). Run it: ``python examples/scripted_fakes.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from langchain_core.messages import BaseMessage

from samalign import RunContext, build_joint_graph
from samalign.testing.fakes import ScriptedChatModel, fake_stage_models

TEXT = "John Smith works for IBM in Armonk ."
ARCHETYPES = {"John Smith": "Person", "IBM": "Organization", "Armonk": "Location"}
TYPES = {"John Smith": "person", "IBM": "organization", "Armonk": "location"}


def classify(messages: Sequence[BaseMessage]) -> str:
    """The archetype classifier: each mention the prompt wraps in <ENT></ENT>."""
    sentence = json.loads(str(messages[0].content))["Sentence"]
    answer: dict[str, list[str]] = {}
    for mention in dict.fromkeys(re.findall(r"<ENT>(.*?)</ENT>", sentence)):
        answer.setdefault(ARCHETYPES[mention], []).append(mention)
    return json.dumps(answer)


def calibrate(messages: Sequence[BaseMessage]) -> str:
    """The calibrator: each mention of the prompt's last line, 'Initial Output: {...}'."""
    initial = json.loads(str(messages[0].content).rsplit("Initial Output: ", 1)[1])
    return json.dumps([{"entity": m, "type": TYPES[m]} for m in initial])


models = fake_stage_models(
    {
        "anchor": '{"person": ["John Smith"], "organization": ["IBM"], "location": ["Armonk"]}',
        # "works" is a one-word explorer mention the anchor did not find: consensus drops it
        "explorer": '{"person": ["John Smith", "works"], "location": ["Armonk"], "other": []}',
        "archetype": classify,
        "calibrate": calibrate,
        # a list answers call by call: the first answer is not JSON, so the stage retries
        "relations_forward": [
            "Sure! Here are the relations.",
            '[{"subject": "John Smith", "pairs": [{"object": "IBM", "relation": "work for"}]}]',
        ],
        "relations_reverse": '[{"object": "Armonk", "pairs": '
        '[{"subject": "IBM", "relation": "organization based in"}]}]',
    }
)
result = build_joint_graph().invoke({"text": TEXT}, context=RunContext("conll04", models))

for entity in result["entities"]:
    where = f"[{entity.start}:{entity.end}]"
    print(f"entity {entity.text!r} {where} {entity.label} ({entity.archetype})")
for dropped in result["noise"]:
    print(f"noise {dropped.mention!r}")
for triplet in result["triplets"]:
    print(f"triplet {triplet.head.text!r} {triplet.relation} {triplet.tail.text!r}")
for diagnostic in result["diagnostics"]:
    print(f"diagnostic {diagnostic.stage}/{diagnostic.kind}")

# Every call is recorded: its messages and the keyword arguments the stage sent.
forward = models["relations_forward"].chat_model
assert isinstance(forward, ScriptedChatModel)
first, retry = forward.calls
print("relations_forward calls:", len(forward.calls))
print("response_format:", first["kwargs"]["response_format"]["json_schema"]["name"])
print("retry feedback:", str(retry["messages"][-1].content)[:28])
