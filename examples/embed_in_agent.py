"""Embed the SAM-NER graph in a larger LangGraph application.

The compiled NER graph is used as a node of a parent graph: the parent passes the text in,
gets typed entities back, and can route on them. Runs offline with scripted fake models.

    python examples/embed_in_agent.py
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from samalign import Entity, NerResult, RunContext, build_ner_graph
from samalign.testing.fakes import fake_stage_models

ner = build_ner_graph()


class AppState(BaseModel):
    text: str
    entities: list[Entity] = []
    summary: str = ""


def summarise(state: AppState) -> dict[str, str]:
    people = [e.text for e in state.entities if e.label in ("person", "researcher")]
    return {"summary": f"{len(state.entities)} entities; people: {people}"}


app = StateGraph(AppState, context_schema=RunContext)
app.add_node("ner", ner)  # a compiled graph is a node; shared keys: text, entities
app.add_node("summarise", summarise)
app.add_edge(START, "ner")
app.add_edge("ner", "summarise")
app.add_edge("summarise", END)
graph = app.compile()

if __name__ == "__main__":
    models = fake_stage_models(
        {
            "anchor": '{"researcher": ["Sepp Hochreiter"], "algorithm": ["LSTM"]}',
            "explorer": '{"algorithm": ["LSTM"], "researcher": ["Sepp Hochreiter"]}',
            "archetype": '{"Person": ["Sepp Hochreiter"], "Computer_Science": ["LSTM"]}',
            "calibrate": '{"Sepp Hochreiter": "researcher", "LSTM": "algorithm"}',
        }
    )
    context = RunContext(domain="crossner_ai", models=models)
    state = graph.invoke({"text": "LSTM was proposed by Sepp Hochreiter ."}, context=context)
    print(state["summary"])
    # The NER part of the parent's state, typed (the parent's own keys are ignored):
    for entity in NerResult.from_state(state).entities:
        print(f"  [{entity.start}:{entity.end}] {entity.text} -> {entity.label}")
