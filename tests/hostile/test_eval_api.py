"""Hostile datasets for ``samalign eval``, and the Python API called as a clumsy caller would."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fault_server import DOMAIN_YAML
from harness import Result, accounted, api_error, cases, each, fake_models, kind, kinds

from samalign.errors import ConfigError, InputError

SENTENCE = {
    "tokens": ["Alice", "met", "Bob", "in", "Paris", "."],
    "entities": [
        {"type": "person", "start": 0, "end": 1},
        {"type": "person", "start": 2, "end": 3},
        {"type": "location", "start": 4, "end": 5},
    ],
    "relations": [],
}


def spert(path: Path, records: list[Any] | str | bytes) -> Path:
    if isinstance(records, bytes):
        path.write_bytes(records)
    elif isinstance(records, str):
        path.write_text(records, encoding="utf-8")
    else:
        path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.fixture
def evaluate(
    run: Callable[..., Result], domain_file: Path, tmp_path: Path
) -> Callable[..., Result]:
    def call(dataset: Path, *flags: str | Path, status: int | None = None) -> Result:
        argv: list[str | Path] = ["eval", dataset, "--domain", domain_file, "--backend", "gold"]
        if "--out" not in flags:
            argv += ["--out", tmp_path / "report.json"]
        return run(*argv, "--quiet", *flags, status=status)

    return call


@kind("eval", "sentence with a lone surrogate token")
def test_surrogate_sentence(evaluate: Callable[..., Result], tmp_path: Path) -> None:
    bad = {**SENTENCE, "tokens": ["Carol", "\ud800", "Lima"], "entities": []}
    data = spert(tmp_path / "data.json", [SENTENCE, bad, SENTENCE])
    result = evaluate(data, status=0)
    assert "1 sentence(s) failed" in result.err
    lines = [json.loads(x) for x in (tmp_path / "report.sentences.jsonl").read_text().splitlines()]
    results = [r for r in lines if "id" in r]
    assert sorted(r["id"] for r in results) == ["data-0", "data-1", "data-2"]  # all accounted
    assert "lone surrogate" in next(r for r in results if r["id"] == "data-1")["error"]
    json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))  # the report is valid
    evaluate(data, status=0)  # and the rerun resumes it


DATASETS: list[tuple[str, list[Any] | str | bytes, str]] = [
    ("dataset nested 100,000 levels", "[" * 100_000, "nested too deeply"),
    ("dataset that is a JSON object", '{"tokens": []}', "array"),
    ("dataset record that is a string", ["Alice met Bob"], "expected an object"),
    ("dataset token with whitespace", [{**SENTENCE, "tokens": ["Al ice"]}], "whitespace"),
    (
        "dataset entity span out of range",
        [{**SENTENCE, "entities": [{"type": "person", "start": 0, "end": 99}]}],
        "outside",
    ),
    (
        "dataset start given as a boolean",
        [{**SENTENCE, "entities": [{"type": "person", "start": True, "end": 1}]}],
        "integer",
    ),
    (
        "dataset relation to a missing entity",
        [{**SENTENCE, "relations": [{"type": "r", "head": 0, "tail": 9}]}],
        "outside",
    ),
    ("dataset not UTF-8", b"[\xff\xfe]", "UTF-8"),
    ("dataset truncated JSON", '[{"tokens": ["Alice"', "invalid JSON"),
]


@cases("eval", "records, message", DATASETS)
def test_hostile_dataset(
    evaluate: Callable[..., Result], tmp_path: Path, records: Any, message: str
) -> None:
    data = spert(tmp_path / "data.json", records)
    result = evaluate(data, status=2)
    assert message in result.err and "data.json" in result.err, result.err
    assert not (tmp_path / "report.json").exists()


@kind("eval", "dataset with a BOM")
def test_dataset_with_bom(evaluate: Callable[..., Result], tmp_path: Path) -> None:
    data = spert(tmp_path / "data.json", b"\xef\xbb\xbf" + json.dumps([SENTENCE]).encode())
    assert "sentences 1, errors 0" in evaluate(data, status=0).out


@kind("eval", "BIO dataset with a BOM and garbage lines")
def test_bio_dataset(evaluate: Callable[..., Result], tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_bytes(b"\xef\xbb\xbfAlice\tB-person\nmet\tO\n\nBob\tB-person\n")
    assert "sentences 2" in evaluate(data, status=0).out
    data.write_bytes(b"Alice\tB-person\tEXTRA\tCOLUMNS\n\xff\n")
    evaluate(data, status=2)


@kind("eval", "CrossRE sentence token with a lone surrogate")
def test_surrogate_crossre_sentence(evaluate: Callable[..., Result], tmp_path: Path) -> None:
    good = {"doc_key": "a", "sentence": ["Alice", "met", "Bob"], "ner": [[0, 0, "person"]]}
    bad = {"doc_key": "b", "sentence": ["Carol", "\ud800"], "ner": []}
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in (good, bad, good | {"doc_key": "c"})))
    result = evaluate(data, status=0)
    assert "1 sentence(s) failed" in result.err
    lines = [json.loads(x) for x in (tmp_path / "report.sentences.jsonl").read_text().splitlines()]
    results = {r["id"]: r for r in lines if "id" in r}
    assert sorted(results) == ["data-0", "data-1", "data-2"]  # every sentence accounted
    assert "lone surrogate" in results["data-1"]["error"]


@kind("eval", "dataset that is a FIFO")
def test_dataset_fifo(evaluate: Callable[..., Result], tmp_path: Path) -> None:
    fifo = tmp_path / "data.json"
    os.mkfifo(fifo)  # reading it would block forever
    assert "data.json" in evaluate(fifo, status=2).err
    assert not (tmp_path / "report.json").exists()


@each(
    "target",
    "eval",
    "eval --out is the dataset",
    "eval --out is a device",
    "eval --out is a folder",
)
def test_eval_out_paths(evaluate: Callable[..., Result], tmp_path: Path, target: str) -> None:
    data = spert(tmp_path / "data.json", [SENTENCE])
    before = data.read_bytes()
    out = data
    if target.endswith("folder"):
        out = tmp_path / "sub.json"
        out.mkdir()
    elif target.endswith("FIFO"):  # the report's results file is a pipe
        out = tmp_path / "fifo.json"
        os.mkfifo(tmp_path / "fifo.sentences.jsonl")
    evaluate(data, "--out", out, status=2)
    assert data.read_bytes() == before


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--limit", "0"], "--limit"),
        (["--fold", "12"], "--fold"),
        (["--concurrency", "-1"], "--concurrency"),
        (["--timeout", "nan"], "--timeout"),
        (["--split", "nope"], ""),
    ],
    ids=kinds(
        "eval",
        "eval --limit 0",
        "eval --fold 12",
        "eval --concurrency negative",
        "eval --timeout NaN",
        "eval unknown split of a file",
    ),
)
def test_bad_eval_flags(
    evaluate: Callable[..., Result], tmp_path: Path, flags: list[str], message: str
) -> None:
    data = spert(tmp_path / "data.json", [SENTENCE])
    result = evaluate(data, *flags)
    if flags[0] == "--split":  # a file is its own split: accepted
        assert result.status == 0
        return
    assert result.status == 2 and message in result.err


@kind("eval", "results file of another configuration")
def test_eval_other_configuration(evaluate: Callable[..., Result], tmp_path: Path) -> None:
    data = spert(tmp_path / "data.json", [SENTENCE])
    evaluate(data, status=0)
    assert "--fresh" in evaluate(data, "--no-explorer", status=2).err
    evaluate(data, "--no-explorer", "--fresh", status=0)


@kind("eval", "damaged results file lines")
def test_eval_damaged_results(evaluate: Callable[..., Result], tmp_path: Path) -> None:
    data = spert(tmp_path / "data.json", [SENTENCE, SENTENCE])
    evaluate(data, status=0)
    results = tmp_path / "report.sentences.jsonl"
    lines = results.read_bytes().splitlines(keepends=True)
    results.write_bytes(lines[0] + b"[" * 100_000 + b"\n" + b"".join(lines[2:]) + b'{"id": "da')
    assert "sentences 2, errors 0" in evaluate(data, status=0).out


# ---------------------------------------------------------------------------------------------
# the Python API
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def graph_and_context(tmp_path: Path) -> tuple[Any, Any]:
    from samalign import RunContext, build_ner_graph, load_domain

    domain_path = tmp_path / "faults.yaml"
    domain_path.write_text(DOMAIN_YAML, encoding="utf-8")
    models = fake_models(["anchor", "explorer", "archetype", "calibrate"])
    return build_ner_graph(), RunContext(load_domain(domain_path), models)


INVOKES: list[tuple[str, Any, type, str]] = [
    ("invoke with text a number", {"text": 5}, InputError, "text"),
    ("invoke with no text", {}, InputError, "text"),
    ("invoke with text None", {"text": None}, InputError, "text"),
    ("invoke with a lone surrogate", {"text": "Alice \ud800"}, InputError, "Unicode"),
    ("invoke with empty text", {"text": "  "}, InputError, "empty"),
    ("invoke with text over the limit", {"text": "Alice " * 1000}, InputError, "characters"),
    ("invoke with a misspelled key", {"txt": "Alice met Bob"}, InputError, "text: Field required"),
]


@cases("api", "state, error, match", INVOKES)
def test_graph_invoke(
    graph_and_context: tuple[Any, Any], state: Any, error: type, match: str
) -> None:
    graph, context = graph_and_context
    api_error(lambda: graph.invoke(state, context=context), error, match)
    api_error(lambda: asyncio.run(graph.ainvoke(state, context=context)), error, match)


@kind("api", "invoke without a run context")
def test_invoke_without_context(graph_and_context: tuple[Any, Any]) -> None:
    graph, _ = graph_and_context
    api_error(lambda: graph.invoke({"text": "Alice"}), ConfigError, "run context")


API: list[tuple[str, Callable[[], Any], type, str]] = []


def api_case(name: str, error: type = ConfigError, match: str = "") -> Callable[..., Any]:
    def register(call: Callable[[], Any]) -> Callable[[], Any]:
        API.append((name, call, error, match))
        return call

    return register


@api_case("RunContext with an unknown domain", match="unknown domain")
def _unknown_domain() -> Any:
    from samalign import RunContext

    return RunContext("no-such-domain", fake_models(["anchor"]))


@api_case("RunContext with models that are not StageModels", match="StageModels")
def _bad_models() -> Any:
    from samalign import RunContext

    return RunContext("crossner_ai", {"anchor": object()})  # type: ignore[arg-type]


@api_case("PipelineOptions out of range", match="max_text_chars")
def _bad_options() -> Any:
    from samalign import PipelineOptions

    return PipelineOptions(max_text_chars=-1)


@api_case("PipelineOptions with an unknown field", match="bogus")
def _unknown_option() -> Any:
    from samalign import PipelineOptions

    return PipelineOptions(bogus=True)  # type: ignore[call-arg]


@api_case("vllm_server_models with 'http://[::1'", match="not a valid URL")
def _bad_url() -> Any:
    from samalign import vllm_server_models

    return vllm_server_models("http://[::1")


@api_case("vllm_server_models with timeout NaN", match="timeout")
def _nan_timeout() -> Any:
    from samalign import vllm_server_models

    return vllm_server_models("http://127.0.0.1:1", timeout=float("nan"))


@api_case("vllm_server_models with negative retries", match="max_retries")
def _bad_retries() -> Any:
    from samalign import vllm_server_models

    return vllm_server_models("http://127.0.0.1:1", max_retries=-1)


@api_case("load_domain of a huge non-name", match="unknown domain")
def _huge_name() -> Any:
    from samalign import load_domain

    return load_domain("x" * 100_000)


@api_case("load_domain of a NUL byte name", match="")
def _nul_name() -> Any:
    from samalign import load_domain

    return load_domain("crossner\x00ai")


@api_case("build_document_graph with a negative sentence size", match="max_sentence_chars")
def _bad_document() -> Any:
    from samalign import build_document_graph, build_ner_graph

    return build_document_graph(build_ner_graph(), max_sentence_chars=-5)


@api_case("run_records with concurrency 0", match="concurrency")
def _bad_concurrency() -> Any:
    from samalign import RunContext, build_ner_graph
    from samalign.batch import run_records

    async def go() -> None:
        context = RunContext("crossner_ai", fake_models(["anchor", "explorer"]))
        async for _ in run_records(build_ner_graph(), context, [], concurrency=0):
            pass

    return asyncio.run(go())


@api_case("StageSpec with a template that includes files", match="include")
def _bad_spec() -> Any:
    from samalign.prompts.specs import default_specs

    return default_specs()["anchor"].with_template("{% include '/etc/passwd' %}").render({})


@api_case("read_records of a folder", InputError, match="folder|cannot open")
def _read_folder() -> Any:
    from samalign.batch import read_records

    return list(read_records("/"))


@api_case("loads_lenient of 100,000 nested brackets", match="nests", error=Exception)
def _deep_answer() -> Any:
    from samalign.prompts.jsonparse import loads_lenient

    return loads_lenient("[" * 100_000)


@api_case("run_local_extract with --out equal to the input", match="is the input")
def _local_same_file() -> Any:
    import tempfile

    from samalign.batch.job import ExtractJob
    from samalign.batch.local_job import run_local_extract
    from samalign.prompts import load_domain
    from samalign.serving.spec import BackendSpec

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.jsonl"
        path.write_text('{"text": "Alice"}\n', encoding="utf-8")
        job = ExtractJob(
            domain=load_domain("crossner_ai"),
            adapters={},
            backend=BackendSpec(kind="server", servers=("http://127.0.0.1:1",)),
        )
        return asyncio.run(run_local_extract(job, path, path, models=fake_models(["anchor"])))


@api_case("RunContext.from_json of 100,000 nested brackets", match="invalid run context")
def _deep_context() -> Any:
    from samalign import RunContext

    return RunContext.from_json("[" * 100_000)


@api_case("RunContext.from_json with an inline domain of 10,000 problems", match="more")
def _many_problems() -> Any:
    from samalign import RunContext

    domain = {"name": "x", "entity_types": [{"label": "p"}] * 10_000}
    return RunContext.from_json({"domain": domain, "models": {"server": "http://127.0.0.1:1"}})


@api_case("SAMALIGN_CONTEXT holding an alias bomb", match="expands to more than")
def _context_bomb() -> Any:
    import os
    import tempfile

    from harness import alias_bomb

    from samalign.graphs.context import deployment_defaults

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "context.yaml"
        path.write_text(alias_bomb(), encoding="utf-8")
        os.environ["SAMALIGN_CONTEXT"] = str(path)
        try:
            return deployment_defaults()
        finally:
            del os.environ["SAMALIGN_CONTEXT"]


@cases("api", "call, error, match", API)
def test_python_api(call: Callable[[], Any], error: type, match: str) -> None:
    from samalign.errors import OutputParseError, SamalignError

    expected = OutputParseError if error is Exception else error
    assert issubclass(expected, SamalignError)
    api_error(call, expected, match)


@kind("api", "run_local_extract over hostile lines")
def test_run_local_extract_accounts(tmp_path: Path) -> None:
    from samalign.batch.job import ExtractJob
    from samalign.batch.local_job import run_local_extract
    from samalign.prompts import load_domain
    from samalign.serving.spec import BackendSpec

    domain_path = tmp_path / "faults.yaml"
    domain_path.write_text(DOMAIN_YAML, encoding="utf-8")
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"id": "a", "text": "Alice"}\n[\n{"id": "a", "text": "Bob"}\n')
    job = ExtractJob(
        domain=load_domain(domain_path),
        adapters={s: s for s in ("anchor", "explorer", "archetype", "calibrate")},
        backend=BackendSpec(kind="server", servers=("http://127.0.0.1:1",)),
    )
    out = tmp_path / "out.jsonl"
    models = fake_models(job.stages)
    summary = asyncio.run(run_local_extract(job, source, out, models=models))
    assert (summary.records, summary.ran, summary.errors) == (3, 3, 2)
    accounted(out, ["a", "line-2", "a"])
