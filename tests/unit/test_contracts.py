"""Typed contracts: results users read, node updates, the request builder, grounding once,
error fields and the kill-switch of the real backends."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import HumanMessage
from pydantic import ValidationError

import samalign
from samalign import (
    DocumentResult,
    JointResult,
    NerResult,
    PipelineOptions,
    RunContext,
    build_document_graph,
    build_joint_graph,
    build_ner_graph,
)
from samalign.agents import grounding
from samalign.agents.base import AgentSettings, stage_request
from samalign.agents.runner import StageRequest, run_stage
from samalign.agents.state import ExtractorUpdate, NerState, StateUpdate
from samalign.errors import BackendError, InputError, ModelRequestBlockedError
from samalign.graphs import read_result
from samalign.prompts import domain_from_mapping, load_domain
from samalign.prompts.domain import Domain
from samalign.serving.chat import EngineChatModel
from samalign.serving.engine import GenerationRequest, GenerationResult
from samalign.serving.errors import explain_error
from samalign.serving.models import StageModel, StageModels
from samalign.serving.vllm_server import VllmServerChatModel, served_models, vllm_server_models
from samalign.testing import BLOCK_ENV, allow_model_requests, block_model_requests
from samalign.testing.fakes import ScriptedChatModel, fake_stage_models

TEXT = "John Smith , who works for IBM in Armonk , met Mary Jones in Boston ."
NER = ["John Smith", "IBM", "Armonk", "Mary Jones", "Boston"]
GOLD_TYPES = {"Peop": ["John Smith", "Mary Jones"], "Org": ["IBM"], "Loc": ["Armonk", "Boston"]}
"""The gold CoNLL04 type of each mention (``FakeNer.gold_of``)."""
FORWARD = [
    {"subject": "John Smith", "pairs": [{"object": "IBM", "relation": "work for"}]},
    {"subject": "ibm", "pairs": [{"object": "Armonk", "relation": "organization based in"}]},
]
REVERSE = [{"object": "Boston", "pairs": [{"subject": "Mary Jones", "relation": "live in"}]}]


def joint_models(fake_ner: Any, **overrides: Any) -> StageModels:
    scripts = fake_ner(
        anchor={TEXT: NER}, explorer={TEXT: NER}, gold=fake_ner.gold_of("conll04", **GOLD_TYPES)
    ).scripts_by_stage()
    scripts["relations_forward"] = json.dumps(FORWARD)
    scripts["relations_reverse"] = json.dumps(REVERSE)
    scripts.update(overrides)
    return fake_stage_models(scripts)


def joint_context(fake_ner: Any, **overrides: Any) -> RunContext:
    return RunContext(domain="conll04", models=joint_models(fake_ner, **overrides))


# ---------------------------------------------------------------------------------------------
# typed results
# ---------------------------------------------------------------------------------------------


def test_ner_result_reads_a_real_graph_run(fake_ner: Any) -> None:
    context = RunContext("conll04", joint_models(fake_ner))
    state = build_ner_graph().invoke({"text": TEXT}, context=context)
    result = NerResult.from_state(state)
    assert result.text == TEXT
    assert result.entities == state["entities"]
    assert [(e.text, e.label) for e in result.entities] == [
        ("John Smith", "Peop"),
        ("IBM", "Org"),
        ("Armonk", "Loc"),
        ("Mary Jones", "Peop"),
        ("Boston", "Loc"),
    ]
    assert result.candidates == state["candidates"]
    assert sorted(result.anchor_mentions) == sorted(NER)
    assert result.explorer_mentions == state["explorer_mentions"]
    assert [g.mention for g in result.anchor_grounded] == result.anchor_mentions
    assert result.archetyped == state["archetyped"]
    assert result.noise == []
    assert result.diagnostics == state["diagnostics"]
    assert result.usage == state["usage"]
    assert result.total_usage.calls == 4  # anchor, explorer, archetype, calibrate
    with pytest.raises(ValidationError):
        result.text = "changed"


def test_joint_result_reads_a_real_graph_run(fake_ner: Any) -> None:
    state = build_joint_graph().invoke({"text": TEXT}, context=joint_context(fake_ner))
    result = JointResult.from_state(state)
    assert isinstance(result, NerResult)
    assert result.triplets == state["triplets"]
    assert {(t.head.text, t.relation, t.tail.text) for t in result.triplets} == {
        ("John Smith", "Work_For", "IBM"),
        ("IBM", "OrgBased_In", "Armonk"),
        ("Mary Jones", "Live_In", "Boston"),
    }
    assert result.forward_triplets == state["forward_triplets"]
    assert result.reverse_triplets == state["reverse_triplets"]
    assert result.dropped_triplets == []
    assert result.total_usage.calls == 6
    # a NER result can be read from the joint state, and the joint result knows which it is
    assert NerResult.from_state(state).entities == result.entities
    assert type(read_result(state)) is JointResult


def test_document_result_reads_a_real_graph_run(fake_ner: Any) -> None:
    document = f"{TEXT}  Mary Jones lives in Boston ."
    fakes = fake_ner(
        anchor={TEXT: NER, "Mary Jones lives in Boston .": ["Mary Jones", "Boston"]},
        explorer={TEXT: NER, "Mary Jones lives in Boston .": ["Mary Jones", "Boston"]},
        gold=fake_ner.gold_of("conll04", **GOLD_TYPES),
    )
    graph = build_document_graph(build_ner_graph())
    state = graph.invoke({"text": document}, context=RunContext("conll04", fakes.models()))
    result = DocumentResult.from_state(state)
    assert type(read_result(state)) is DocumentResult
    assert len(result.sentences) == 2 and result.errors == []
    assert [e.text for e in result.entities] == [*NER, "Mary Jones", "Boston"]
    for entity in result.entities:
        entity.span.check(document)
    assert result.total_usage.calls == 8


def test_results_ignore_a_parent_graphs_keys_and_refuse_non_states(fake_ner: Any) -> None:
    state = build_ner_graph().invoke({"text": TEXT}, context=joint_context(fake_ner))
    parent = {**state, "summary": "from a parent graph", "route": 3}
    assert NerResult.from_state(parent).entities == state["entities"]
    assert type(read_result(parent)) is NerResult
    assert NerResult.from_state(NerState(text="x")).text == "x"
    with pytest.raises(InputError, match=r"NerResult.*entities"):
        NerResult.from_state({"text": "x", "entities": "not a list"})
    with pytest.raises(InputError, match="text"):
        JointResult.from_state({})


def test_results_are_exported_and_the_test_error_is_not() -> None:
    for name in ("NerResult", "JointResult", "DocumentResult", "GroundedMention"):
        assert name in samalign.__all__
    assert "ModelRequestBlockedError" not in samalign.__all__
    from samalign.testing import ModelRequestBlockedError as from_testing

    assert from_testing is ModelRequestBlockedError
    assert grounding.GroundedMention is samalign.GroundedMention


# ---------------------------------------------------------------------------------------------
# typed node updates
# ---------------------------------------------------------------------------------------------


def test_each_node_writes_only_the_fields_of_its_update(fake_ner: Any) -> None:
    updates: dict[str, set[str]] = {}
    graph = build_joint_graph()
    for chunk in graph.stream(
        {"text": TEXT}, context=joint_context(fake_ner), stream_mode="updates"
    ):
        for node, update in chunk.items():
            updates[node] = set(update)
    common = {"diagnostics", "usage"}
    assert updates == {
        "anchor": {"anchor_mentions", "anchor_grounded", *common},
        "explorer": {"explorer_mentions", "explorer_grounded", *common},
        "consensus": {"noise", "candidates", *common},
        "archetype": {"archetyped", *common},
        "calibrate": {"entities", *common},
        "relations_forward": {"forward_triplets", *common},
        "relations_reverse": {"reverse_triplets", *common},
        "anchor_filter": {"triplets", "dropped_triplets"},
    }


def test_updates_are_validated_and_keep_only_what_was_set() -> None:
    update = ExtractorUpdate(anchor_mentions=["IBM"], failed_stages=[])
    assert update.as_update() == {"anchor_mentions": ["IBM"], "failed_stages": []}
    with pytest.raises(ValidationError):
        ExtractorUpdate(entities=[])  # type: ignore[call-arg]  # not the extractor's field
    with pytest.raises(ValidationError):
        StateUpdate(usage={"anchor": "many"})


# ---------------------------------------------------------------------------------------------
# AgentSettings is part of PipelineOptions
# ---------------------------------------------------------------------------------------------


def test_pipeline_options_are_the_agent_settings() -> None:
    options = PipelineOptions(fuzzy_threshold=0.6, use_anchor=False)
    assert isinstance(options, AgentSettings)
    for name, field in AgentSettings.model_fields.items():
        assert PipelineOptions.model_fields[name].default == field.default, name
        assert getattr(PipelineOptions(), name) == getattr(AgentSettings(), name)
    assert options.fuzzy_threshold == 0.6
    with pytest.raises(samalign.ConfigError, match="invalid AgentSettings: parse_retries"):
        AgentSettings(parse_retries=9)


# ---------------------------------------------------------------------------------------------
# the one request builder
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ctx:
    domain: Domain
    models: StageModels


def _domain_with(prompts: dict[str, str], adapters: dict[str, str]) -> Domain:
    base = load_domain("conll04").model_dump()
    return domain_from_mapping({**base, "prompts": prompts, "adapters": adapters}, origin="t")


def test_stage_request_renders_the_stage_spec_and_chooses_budget_and_adapter() -> None:
    domain = _domain_with({"archetype": "CUSTOM {{ labels | join(',') }} :: {{ text }}"}, {})
    ctx = _Ctx(domain, fake_stage_models({}))

    def parse(raw: str) -> str:
        return raw.upper()

    prepared = stage_request(
        "archetype",
        ctx,
        AgentSettings(),
        variables={"labels": ["a", "b"], "text": "T"},
        schema={"type": "object"},
        parse=parse,
        extra=["m"],
    )
    assert prepared.request == StageRequest(
        stage="archetype",
        messages=[HumanMessage(content="CUSTOM a,b :: T")],
        schema={"type": "object"},
        max_tokens=512,
        adapter=None,
    )
    assert prepared.parse is parse and prepared.extra == ["m"]
    domain = _domain_with({}, {"direct_typing": "typer"})
    default = stage_request(
        "archetype",
        _Ctx(domain, fake_stage_models({})),
        AgentSettings(max_completion_tokens=77),
        variables={"labels": ["a"], "text": "T"},
        schema=None,
        parse=parse,
        adapter_stage="direct_typing",
    )
    assert default.request.max_tokens == 77 and default.request.adapter == "typer"
    assert "T" in str(default.request.messages[0].content)


def test_every_model_stage_builds_its_request_the_same_way(fake_ner: Any, stage_calls: Any) -> None:
    stages = ["anchor", "explorer", "archetype", "calibrate", "relations_forward"]
    domain = _domain_with(
        {"relations_forward": "MY RELATIONS {{ text }}"},
        {stage: f"{stage}-lora" for stage in stages},
    )
    models = joint_models(fake_ner)
    options = PipelineOptions(max_completion_tokens=99, aggregate_relations=False)
    build_joint_graph(options).invoke({"text": TEXT}, context=RunContext(domain, models))
    for stage in stages:
        [call] = stage_calls(models, stage)
        assert call["kwargs"]["model"] == f"{stage}-lora", stage
        assert call["kwargs"]["max_tokens"] == 99, stage
        name = call["kwargs"]["response_format"]["json_schema"]["name"]
        assert name == f"{stage}_answer"
    [forward] = stage_calls(models, "relations_forward")
    assert forward["messages"][0].content == f"MY RELATIONS {TEXT}"


def test_the_recover_stage_asks_the_anchor_through_the_builder(
    fake_ner: Any, stage_calls: Any
) -> None:
    text = "Mary Jones works for Acme ."
    forward = [{"subject": "Mary Jones", "pairs": [{"object": "Acme", "relation": "work for"}]}]
    scripts = fake_ner(
        anchor={text: ["Mary Jones"]},
        explorer={text: ["Mary Jones"]},
        gold=fake_ner.gold_of("conll04", **GOLD_TYPES),
    ).scripts_by_stage()
    scripts["anchor"] = [json.dumps({"person": ["Mary Jones"]}), '{"organization": ["Acme"]}']
    scripts["relations_forward"] = json.dumps(forward)
    models = fake_stage_models(scripts)
    domain = _domain_with({}, {"anchor": "iepile"})
    options = PipelineOptions(recover_dropped=True, aggregate_relations=False)
    state = build_joint_graph(options).invoke({"text": text}, context=RunContext(domain, models))
    result = JointResult.from_state(state)
    assert [(t.head.text, t.tail.text) for t in result.triplets] == [("Mary Jones", "Acme")]
    _extraction, verify = stage_calls(models, "anchor")
    assert verify["kwargs"]["model"] == "iepile" and verify["kwargs"]["max_tokens"] == 512
    assert "Acme" in json.dumps(verify["kwargs"]["response_format"])


# ---------------------------------------------------------------------------------------------
# each mention is grounded once
# ---------------------------------------------------------------------------------------------


def _count_finds(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    found: Counter[str] = Counter()
    real = grounding._find

    def counting(text: str, index: Any, mention: str, threshold: float) -> Any:
        found[mention] += 1
        return real(text, index, mention, threshold)

    monkeypatch.setattr(grounding, "_find", counting)
    return found


def test_extractor_mentions_are_grounded_once_for_every_later_stage(
    fake_ner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = _count_finds(monkeypatch)
    state = build_joint_graph().invoke({"text": TEXT}, context=joint_context(fake_ner))
    # anchor and explorer each ground their own answer once; consensus and both relation
    # stages reuse those spans; only "ibm" (a relation argument no extractor wrote) is new
    assert found == Counter({**dict.fromkeys(NER, 2), "ibm": 1})
    assert len(state["triplets"]) == 3


def test_grounded_mentions_carry_spans_and_tier(
    fake_ner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "LSTM beat lstm baselines ; LSTM won ."
    fakes = fake_ner(anchor={text: ["lstm"]}, explorer={text: ["LSTM", "Quux"]})
    found = _count_finds(monkeypatch)
    graph = build_ner_graph(PipelineOptions(use_consensus=False))  # CCR would drop "LSTM"
    context = RunContext("crossner_ai", fakes.models())
    result = NerResult.from_state(graph.invoke({"text": text}, context=context))
    [anchor] = result.anchor_grounded
    # "lstm" exists as written: exact; its spans are that spelling's occurrences
    assert (anchor.mention, anchor.tier) == ("lstm", "exact")
    assert [(s.start, s.end) for s in anchor.spans] == [(10, 14)]
    [explorer] = result.explorer_grounded
    assert (explorer.mention, explorer.tier) == ("LSTM", "exact")
    assert [(s.start, s.end) for s in explorer.spans] == [(0, 4), (27, 31)]
    assert result.explorer_mentions == ["LSTM"]  # "Quux" is a hallucination, dropped
    assert [e.text for e in result.candidates] == ["LSTM", "lstm", "LSTM"]
    assert found == Counter({"lstm": 1, "LSTM": 1, "Quux": 1})


def test_a_normalised_mention_keeps_the_texts_spelling(fake_ner: Any) -> None:
    text = "The U.S . Army met Brontë fans ."
    fakes = fake_ner(anchor={text: ["u.s. army", "Bront"]}, explorer={text: []})
    state = build_ner_graph().invoke(
        {"text": text}, context=RunContext("crossner_ai", fakes.models())
    )
    result = NerResult.from_state(state)
    assert [(g.mention, g.tier) for g in result.anchor_grounded] == [
        ("U.S . Army", "normalized"),
        ("Brontë", "fuzzy"),
    ]
    assert result.anchor_mentions == ["U.S . Army", "Brontë"]
    assert [c.text for c in result.candidates] == ["U.S . Army", "Brontë"]


# ---------------------------------------------------------------------------------------------
# errors carry fields
# ---------------------------------------------------------------------------------------------


def _status_error(cls: type[openai.APIStatusError], status: int) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:8000/v1/chat/completions")
    return cls("boom", response=httpx.Response(status, request=request), body=None)


def _raising_model(exc: BaseException) -> StageModel:
    def script(messages: Sequence[Any]) -> str:
        raise exc

    return StageModel(ScriptedChatModel(script=script), adapter="anchor")


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (_status_error(openai.NotFoundError, 404), 404),
        (_status_error(openai.InternalServerError, 500), 500),
        (openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:9")), None),
    ],
)
def test_backend_errors_carry_stage_adapter_and_status(
    exc: BaseException, status: int | None
) -> None:
    request = StageRequest(
        stage="anchor", messages=[HumanMessage("x")], schema=None, max_tokens=8, adapter="ie"
    )
    with pytest.raises(BackendError) as info:
        run_stage(request, _raising_model(exc), str)
    assert (info.value.stage, info.value.adapter, info.value.status_code) == (
        "anchor",
        "ie",
        status,
    )


def test_engine_backend_errors_get_the_stage_filled_in() -> None:
    raised = BackendError("the engine is closed")
    err = explain_error(raised, stage="calibrate", adapter="identity")
    assert err is raised
    assert (raised.stage, raised.adapter, raised.status_code) == ("calibrate", "identity", None)
    kept = explain_error(BackendError("x", stage="anchor"), stage="calibrate", adapter="a")
    assert isinstance(kept, BackendError) and kept.stage == "anchor"


def test_served_models_reports_the_http_status(monkeypatch: pytest.MonkeyPatch) -> None:
    @contextlib.contextmanager
    def stream(method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
        yield httpx.Response(500, request=httpx.Request(method, url))

    monkeypatch.setattr(httpx, "stream", stream)  # served_models streams (a total deadline)
    with pytest.raises(BackendError, match="cannot reach") as info:
        served_models("http://127.0.0.1:8000")
    assert info.value.status_code == 500


def test_input_error_can_carry_the_place() -> None:
    err = InputError("bad record", path="data.jsonl", line=3)
    assert (err.path, err.line, str(err)) == ("data.jsonl", 3, "bad record")


# ---------------------------------------------------------------------------------------------
# the kill-switch lives in the real backends
# ---------------------------------------------------------------------------------------------


def _server_models() -> StageModels:
    return vllm_server_models("http://127.0.0.1:9", stages=["anchor"], max_retries=0)


async def test_a_real_chat_openai_is_blocked_inside_the_context_manager(
    monkeypatch: pytest.MonkeyPatch, network_guard: Any
) -> None:
    monkeypatch.delenv(BLOCK_ENV)
    chat = _server_models()["anchor"].chat_model
    assert isinstance(chat, VllmServerChatModel) and chat._llm_type == "openai-chat"
    with block_model_requests():
        with pytest.raises(ModelRequestBlockedError, match="block_model_requests"):
            chat.invoke("hello")
        with pytest.raises(ModelRequestBlockedError):
            await chat.ainvoke("hello")
        with pytest.raises(ModelRequestBlockedError):
            list(chat.stream("hello"))
        with pytest.raises(ModelRequestBlockedError):
            async for _ in chat.astream("hello"):
                pass
    assert network_guard.attempts == []


def test_the_graph_surfaces_the_typed_error_and_a_fake_still_runs(
    monkeypatch: pytest.MonkeyPatch, fake_ner: Any, network_guard: Any
) -> None:
    monkeypatch.delenv(BLOCK_ENV)
    graph = build_ner_graph(PipelineOptions(use_explorer=False))
    real = RunContext("conll04", _server_models())
    fake = joint_context(fake_ner)
    with block_model_requests():
        with pytest.raises(ModelRequestBlockedError):
            graph.invoke({"text": TEXT}, context=real)
        assert NerResult.from_state(graph.invoke({"text": TEXT}, context=fake)).entities
    assert network_guard.attempts == []


def test_a_blocked_request_is_not_failed_over_to_another_server(network_guard: Any) -> None:
    models = vllm_server_models(["http://127.0.0.1:9", "http://127.0.0.1:10"], stages=["anchor"])
    with pytest.raises(ModelRequestBlockedError):
        models["anchor"].chat_model.invoke("hello")
    assert network_guard.attempts == []


def test_allow_overrides_the_environment_and_contexts_nest(network_guard: Any) -> None:
    network_guard.refuse("127.0.0.1", 9)
    chat = _server_models()["anchor"].chat_model
    with pytest.raises(ModelRequestBlockedError, match=BLOCK_ENV):  # the env is set here
        chat.invoke("hello")
    with allow_model_requests():
        with pytest.raises(openai.APIConnectionError):  # the request really went out
            chat.invoke("hello")
        with block_model_requests(), pytest.raises(ModelRequestBlockedError):
            chat.invoke("hello")
        with pytest.raises(openai.APIConnectionError):
            chat.invoke("hello")
    assert network_guard.attempts  # only the allowed calls reached the socket


class _Engine:
    llm_type = "samalign-test-engine"
    adapters = frozenset({"anchor"})

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def generate(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        return GenerationResult(text="{}", token_ids=(1,), prompt_tokens=1, finish_reason="stop")

    async def agenerate(self, request: GenerationRequest) -> GenerationResult:
        return self.generate(request)

    def close(self) -> None:
        pass


async def test_in_process_engine_models_are_blocked_before_the_engine_runs() -> None:
    engine = _Engine()
    chat = EngineChatModel(engine=engine, adapter="anchor")
    with pytest.raises(ModelRequestBlockedError):
        chat.invoke("hello")
    with block_model_requests(), pytest.raises(ModelRequestBlockedError):
        await chat.ainvoke("hello")
    assert engine.requests == []
    with allow_model_requests():
        assert chat.invoke("hello").content == "{}"
    assert len(engine.requests) == 1


class _FakeNamedLikeOpenAI(ScriptedChatModel):
    @property
    def _llm_type(self) -> str:
        return "openai-chat"


def test_no_type_name_decides_what_is_blocked() -> None:
    model = StageModel(_FakeNamedLikeOpenAI(script='{"person": ["Ada"]}'), adapter="anchor")
    request = StageRequest(
        stage="anchor", messages=[HumanMessage("Ada")], schema=None, max_tokens=8
    )
    with block_model_requests():
        assert run_stage(request, model, str).value == '{"person": ["Ada"]}'
