"""The run context as JSON: domain forms, lazily built shared models, defaults, schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from samalign.agents.cache import MemoryCache, SqliteCache
from samalign.errors import ConfigError
from samalign.graphs import (
    RunContext,
    build_document_graph,
    build_joint_graph,
    build_ner_graph,
    server,
)
from samalign.graphs.context import CONTEXT_ENV
from samalign.serving.config import (
    ModelsConfig,
    close_shared_models,
    shared_model_sets,
    shared_models,
)
from samalign.testing.fakes import fake_stage_models

URL = "http://127.0.0.1:8000"


def test_json_context_builds_models_lazily_and_shares_them() -> None:
    close_shared_models()
    ctx = RunContext(**{"domain": "conll04", "models": {"server": URL}})
    assert shared_model_sets() == 0, "nothing is built before the first use"
    models = ctx.models
    assert shared_model_sets() == 1 and "relations_forward" in models
    assert models["anchor"].adapter == "anchor"
    other = RunContext("crossner_ai", {"server": URL})
    assert other.models is models, "one model set per distinct configuration"
    third = RunContext("conll04", {"server": URL, "timeout": 5})
    assert third.models is not models and shared_model_sets() == 2
    close_shared_models()
    assert shared_model_sets() == 0


def test_adapters_and_per_stage_servers() -> None:
    ctx = RunContext(
        "conll04",
        {
            "server": URL,
            "servers": {"calibrate": "http://127.0.0.1:9000"},
            "adapters": {"anchor": "iepile"},
        },
    )
    assert ctx.domain.adapters["anchor"] == "iepile"  # the models' adapter map wins
    assert ctx.models["anchor"].adapter == "iepile"
    base_url = getattr(ctx.models["calibrate"].chat_model, "openai_api_base", "")
    assert str(base_url).startswith("http://127.0.0.1:9000")
    close_shared_models()


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({}, "not both and not neither"),
        ({"server": URL, "model_dir": "x"}, "not both"),
        ({"server": "ftp://x"}, "must start with http"),
        ({"server": URL, "adapters": {"mars": "a"}}, "unknown stage"),
        ({"server": URL, "vllm_python": "/x"}, "vllm-inprocess"),
        ({"srv": URL}, "srv"),
    ],
)
def test_bad_models_settings_name_the_problem(models: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunContext("conll04", models).models  # noqa: B018 - the build raises


def test_model_dir_settings_fail_clearly_on_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model"):
        shared_models(ModelsConfig(model_dir=str(tmp_path / "none")))


def test_inline_and_file_domains(tmp_path: Path) -> None:
    inline = {
        "name": "tiny",
        "entity_types": [{"label": "gene", "definition": "A gene or protein name."}],
    }
    assert RunContext(inline, {"server": URL}).domain.labels == ["gene"]
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(inline))
    assert RunContext(str(path), {"server": URL}).domain.name == "tiny"
    with pytest.raises(ConfigError, match="unknown domain"):
        RunContext("mars", {"server": URL})
    with pytest.raises(ConfigError, match="invalid domain"):
        RunContext({"name": "x"}, {"server": URL})


def test_from_json_and_its_errors() -> None:
    text = json.dumps({"domain": "conll04", "models": {"server": URL}, "cache": "memory"})
    ctx = RunContext.from_json(text)
    assert ctx.domain.name == "conll04" and isinstance(ctx.cache, MemoryCache)
    with pytest.raises(ConfigError, match="invalid run context"):
        RunContext.from_json({"domain": "conll04", "models": {"server": URL}, "x": 1})


def test_shared_cache_per_setting(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    a = RunContext("conll04", {"server": URL}, cache=f"sqlite:{db}")
    b = RunContext("conll04", {"server": URL}, cache={"kind": "sqlite", "path": db})
    assert isinstance(a.cache, SqliteCache) and a.cache is b.cache
    own = MemoryCache(3)
    assert RunContext("conll04", {"server": URL}, cache=own).cache is own


def test_deployment_defaults_fill_what_a_run_leaves_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=CONTEXT_ENV):
        RunContext()
    monkeypatch.setenv(CONTEXT_ENV, json.dumps({"domain": "conll04", "models": {"server": URL}}))
    assert RunContext().domain.name == "conll04"
    assert RunContext(domain="crossner_ai").domain.name == "crossner_ai"
    path = tmp_path / "ctx.yaml"
    path.write_text("domain: crossner_music\nmodels:\n  server: http://127.0.0.1:8001\n")
    monkeypatch.setenv(CONTEXT_ENV, str(path))
    assert RunContext(**{}).domain.name == "crossner_music"  # what LangGraph does with {}
    monkeypatch.setenv(CONTEXT_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="not JSON and not a readable file"):
        RunContext()
    monkeypatch.setenv(CONTEXT_ENV, '{"domain": "conll04", "modls": {}}')
    with pytest.raises(ConfigError, match="unknown key"):
        RunContext()
    close_shared_models()


def test_graphs_declare_input_output_and_context_schemas() -> None:
    for graph in (build_ner_graph(), build_joint_graph(), build_document_graph(build_ner_graph())):
        assert set(graph.get_input_jsonschema()["properties"]) == {"text", "id"}
        context = graph.get_context_jsonschema()
        assert context is not None
        assert set(context["properties"]) == {"domain", "models", "cache", "options"}
    result = build_joint_graph(output="result").get_output_jsonschema()["properties"]
    assert set(result) == {
        "id",
        "text",
        "entities",
        "triplets",
        "dropped_triplets",
        "noise",
        "diagnostics",
        "usage",
        "failed_stages",
    }
    assert "candidates" in build_joint_graph().get_output_jsonschema()["properties"]


def test_a_graph_runs_with_a_plain_dict_context_and_an_id() -> None:
    scripts = {
        "anchor": '{"person": ["Ann"]}',
        "explorer": '{"person": ["Ann"]}',
        "archetype": '{"Person": ["Ann"]}',
        "calibrate": '{"Ann": "person"}',
    }
    # what LangGraph does with a JSON context: RunContext(**mapping); models stay Python here
    graph = build_ner_graph(output="result")
    out = graph.invoke(
        {"text": "Ann sings .", "id": "s1"},
        context={"domain": "conll04", "models": fake_stage_models(scripts)},  # type: ignore[arg-type]
    )
    assert out["id"] == "s1" and [e.text for e in out["entities"]] == ["Ann"]


def test_server_factories_build_per_options_and_reject_bad_ones() -> None:
    ner = server.ner({"configurable": {"options": {"use_calibration": False}}})
    assert "calibrate" not in ner.nodes and ner.name == "samalign_ner"
    assert server.ner({"configurable": {"options": {"use_calibration": False}}}) is ner
    assert "calibrate" in server.ner({}).nodes
    joint = server.joint({"configurable": {"options": {"aggregate_relations": False}}})
    assert "relations_reverse" not in joint.nodes
    document = server.document({"configurable": {"options": {"sentence_graph": "ner"}}})
    assert "triplets" in document.output_channels
    assert set(document.get_output_jsonschema()["properties"]) >= {"entities", "errors"}
    with pytest.raises(ConfigError, match="PipelineOptions"):
        server.ner({"configurable": {"options": {"use_anchor": False, "use_explorer": False}}})
    with pytest.raises(ConfigError, match="sentence_graph"):
        server.document({"configurable": {"options": {"sentence_graph": "x"}}})
    with pytest.raises(ConfigError, match="options must be an object"):
        server.ner({"configurable": {"options": [1]}})


def test_server_factories_take_options_from_the_run_context_first() -> None:
    from types import SimpleNamespace

    # a run with a context cannot send configurable; its context's options choose the graph
    runtime = SimpleNamespace(context={"domain": "conll04", "options": {"use_explorer": False}})
    config = {"configurable": {"options": {"use_anchor": False}}}
    assert "explorer" not in server.ner(config, runtime).nodes  # type: ignore[arg-type]
    typed = SimpleNamespace(
        context=RunContext("conll04", {"server": URL}, options={"aggregate_relations": False})
    )
    assert "relations_reverse" not in server.joint({}, typed).nodes  # type: ignore[arg-type]
    assert "anchor" not in server.ner(config, SimpleNamespace()).nodes  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="PipelineOptions"):
        RunContext("conll04", {"server": URL}, options={"use_anchors": True})
    with pytest.raises(ConfigError, match="sentence_graph"):
        RunContext("conll04", {"server": URL}, options={"sentence_graph": "doc"})


def test_langgraph_json_declares_the_three_graphs() -> None:
    root = Path(__file__).resolve().parents[2]
    config = json.loads((root / "langgraph.json").read_text())
    paths = {k: v["path"] for k, v in config["graphs"].items()}
    assert paths == {
        "samalign_ner": "samalign.graphs.server:ner",
        "samalign_joint": "samalign.graphs.server:joint",
        "samalign_document": "samalign.graphs.server:document",
    }
    for path in paths.values():
        module, name = path.split(":")
        assert callable(getattr(server, name)) and module == server.__name__
