"""LangGraph's own server (``langgraph dev``, in memory, no Docker) serving samalign's graphs.

Against the tiny vLLM CPU server: a run of each graph with a JSON context, a streamed run
(stage updates in order), a threaded run, ``RemoteGraph`` as a node of a local parent graph,
and the server's MCP endpoint listing the graphs as tools and answering an MCP client's call.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from samalign.serving.server_process import free_port, running_server

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# constrained mentions and a small budget: the tiny random model then writes grounded answers
FAST = {"constrain_mentions": True, "max_completion_tokens": 192}
TEXTS = [
    "John Smith works for IBM in Armonk , New York .",
    "Mary Jones , a lawyer from Boston , met the mayor of Chicago .",
]


def json_context(vllm_server: str, **extra: Any) -> dict[str, Any]:
    return {"domain": "conll04", "models": {"server": vllm_server, "timeout": 300}, **extra}


@pytest.fixture(scope="module")
def langgraph_url(vllm_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``langgraph dev`` on loopback (no browser, no reload), defaults pointing at vLLM."""
    pytest.importorskip("langgraph_api")
    langgraph = shutil.which("langgraph", path=str(Path(sys.executable).parent))
    if langgraph is None:
        pytest.fail("langgraph-cli is not installed: pip install 'samalign[server]'")
    port = free_port()
    log_path = tmp_path_factory.mktemp("langgraph") / "server.log"
    env = {
        **os.environ,
        "SAMALIGN_CONTEXT": json.dumps(json_context(vllm_server)),
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    argv = [
        langgraph,
        "dev",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-browser",
        "--no-reload",
        "--config",
        str(REPO / "langgraph.json"),
    ]
    url = f"http://127.0.0.1:{port}"
    # its own working folder: `langgraph dev` keeps its in-memory state in ./.langgraph_api
    workdir = tmp_path_factory.mktemp("langgraph-cwd")
    with running_server(
        argv,
        url=url,
        env=env,
        log_path=log_path,
        timeout=180,
        name="langgraph dev",
        ready_path="/ok",
        cwd=workdir,
    ):
        yield url


def check_spans(text: str, result: dict[str, Any]) -> None:
    for entity in result["entities"]:
        span = entity["span"]
        assert text[span["start"] : span["end"]] == span["text"]
    for triplet in [
        *result.get("triplets", []),
        *(d["triplet"] for d in result.get("dropped_triplets", [])),
    ]:
        for arg in (triplet["head"], triplet["tail"]):
            assert text[arg["span"]["start"] : arg["span"]["end"]] == arg["span"]["text"]


async def test_each_graph_runs_with_a_json_context(langgraph_url: str, vllm_server: str) -> None:
    from langgraph_sdk import get_client

    client = get_client(url=langgraph_url)
    assistants = {a["graph_id"] for a in await client.assistants.search()}
    assert {"samalign_ner", "samalign_joint", "samalign_document"} <= assistants
    found = 0
    for graph_id, text in [
        ("samalign_ner", TEXTS[0]),
        ("samalign_joint", TEXTS[1]),
        ("samalign_document", " ".join(TEXTS)),
    ]:
        result = await client.runs.wait(
            None,
            graph_id,
            input={"text": text, "id": f"{graph_id}-1"},
            # a run with a context cannot send configurable: the graph options travel in it
            context=json_context(vllm_server, options=FAST),
            raise_error=True,
        )
        assert isinstance(result, dict), result
        assert result["id"] == f"{graph_id}-1" and result["text"] == text
        # the clean output schema: no intermediate stage state
        assert "anchor_mentions" not in result and "candidates" not in result
        assert set(result) >= {"entities", "diagnostics", "usage"}
        check_spans(text, result)
        found += len(result["entities"])
        assert sum(u["calls"] for u in result["usage"].values()) > 0
        if graph_id != "samalign_ner":
            assert "triplets" in result and "dropped_triplets" in result
    assert found > 0, "constrained answers ground to entities"
    schemas = await client.assistants.get_schemas(
        next(a["assistant_id"] for a in await client.assistants.search(graph_id="samalign_ner"))
    )
    assert set(schemas["input_schema"]["properties"]) == {"text", "id"}
    assert {"domain", "models", "cache", "options"} <= set(schemas["context_schema"]["properties"])


async def test_streamed_run_sends_stage_updates_in_order(
    langgraph_url: str, vllm_server: str
) -> None:
    from langgraph_sdk import get_client

    client = get_client(url=langgraph_url)
    nodes: list[str] = []
    async for chunk in client.runs.stream(
        None,
        "samalign_joint",
        input={"text": TEXTS[0]},
        context=json_context(vllm_server, options=FAST),
        stream_mode="updates",
    ):
        if chunk.event == "updates" and isinstance(chunk.data, dict):
            nodes.extend(chunk.data)
    assert set(nodes[:2]) == {"anchor", "explorer"}  # one step, in parallel
    assert nodes[2:5] == ["consensus", "archetype", "calibrate"]
    assert set(nodes[5:7]) == {"relations_forward", "relations_reverse"}
    assert nodes[7:] == ["anchor_filter"]


async def test_threaded_run_keeps_its_state(langgraph_url: str, vllm_server: str) -> None:
    from langgraph_sdk import get_client

    client = get_client(url=langgraph_url)
    thread = await client.threads.create()
    result = await client.runs.wait(
        thread["thread_id"],
        "samalign_ner",
        input={"text": TEXTS[1]},
        context=json_context(vllm_server, options=FAST),
        raise_error=True,
    )
    state = await client.threads.get_state(thread["thread_id"])
    assert state["values"]["text"] == TEXTS[1]
    assert state["values"]["entities"] == result["entities"]  # type: ignore[index]
    runs = await client.runs.list(thread["thread_id"])
    assert [r["status"] for r in runs] == ["success"]


def test_remote_graph_is_a_node_of_a_local_parent_graph(langgraph_url: str) -> None:
    from langgraph.graph import END, START, StateGraph
    from langgraph.pregel.remote import RemoteGraph
    from typing_extensions import TypedDict

    class AppState(TypedDict, total=False):
        text: str
        entities: list[dict[str, Any]]
        summary: str

    # no context travels through a node: the server's defaults ($SAMALIGN_CONTEXT) apply
    remote = RemoteGraph(
        "samalign_ner", url=langgraph_url, config={"configurable": {"options": FAST}}
    )

    def summarise(state: AppState) -> dict[str, str]:
        return {"summary": ", ".join(e["span"]["text"] for e in state.get("entities", []))}

    app = StateGraph(AppState)
    app.add_node("ner", remote)
    app.add_node("summarise", summarise)
    app.add_edge(START, "ner")
    app.add_edge("ner", "summarise")
    app.add_edge("summarise", END)
    result = app.compile().invoke({"text": TEXTS[0]})
    check_spans(TEXTS[0], result)  # type: ignore[arg-type]
    assert result["summary"] == ", ".join(e["span"]["text"] for e in result["entities"])


async def test_mcp_endpoint_lists_the_graphs_and_answers_a_call(langgraph_url: str) -> None:
    pytest.importorskip("langchain_mcp_adapters")
    from langchain_mcp_adapters.client import MultiServerMCPClient
    from langgraph_sdk import get_client

    # an assistant = a graph with saved options; MCP lists every assistant as a tool
    client = get_client(url=langgraph_url)
    await client.assistants.create(
        "samalign_ner", config={"configurable": {"options": FAST}}, name="samalign_ner_constrained"
    )
    mcp = MultiServerMCPClient(
        {"samalign": {"url": f"{langgraph_url}/mcp", "transport": "streamable_http"}}
    )
    tools = {t.name: t for t in await mcp.get_tools()}
    assert {"samalign_ner", "samalign_joint", "samalign_document"} <= set(tools)
    tool = tools["samalign_ner_constrained"]
    assert set(tool.args_schema["properties"]) == {"text", "id"}  # type: ignore[index]
    answer = await tool.ainvoke({"text": TEXTS[0]})
    text = (
        answer
        if isinstance(answer, str)
        else "".join(part["text"] if isinstance(part, dict) else str(part) for part in answer)
    )
    result = ast.literal_eval(text)  # the server answers with the run output's repr
    assert result["text"] == TEXTS[0]
    assert result["entities"], "the MCP call returns entities"
    check_spans(TEXTS[0], result)
