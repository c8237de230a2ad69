"""The Ray Data stage, the output row schema and the Ray driver's accounting (no Ray cluster).

The stage is called directly on pyarrow batches; the driver runs with ``_run_on_ray`` replaced
by an in-process loop over the same stage, so the shard plan, resume, ``--retry-errors`` and
the rows Ray never returns are all exercised without starting Ray (the integration tests do).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from samalign.batch import ray_job
from samalign.batch.job import ExtractJob, sentence_graph_of
from samalign.batch.ray_job import MANIFEST, RayOptions, read_output, run_ray_extract
from samalign.batch.ray_stage import ExtractStage
from samalign.batch.records import InputRecord, OutputRecord, read_inputs
from samalign.batch.rows import JSON_FIELDS, ROW_FIELDS, output_to_row, row_schema, row_to_output
from samalign.batch.run import run_records
from samalign.errors import ConfigError, InputError
from samalign.graphs import PipelineOptions, RunContext
from samalign.prompts import load_domain
from samalign.serving.models import StageModels
from samalign.serving.spec import BackendSpec

GOLD = {
    "Sepp Hochreiter": ("Person", "researcher"),
    "Munich": ("Location", "location"),
    "LSTM": ("Computer_Science", "algorithm"),
}


def texts(n: int) -> list[str]:
    return [f"Sepp Hochreiter built LSTM{i} in Munich ." for i in range(n)]


@pytest.fixture
def make_models(fake_ner: Any) -> Any:
    """A picklable-enough factory: the stage calls it with the job."""

    def factory(job: ExtractJob | None = None) -> StageModels:
        table = {t: ["Sepp Hochreiter", "Munich"] for t in texts(50)}
        base = fake_ner(anchor=table, explorer=table, gold=GOLD).scripts_by_stage()["anchor"]

        def anchor(messages: Any) -> str:
            if "BOOM" in str(messages[0].content):
                raise RuntimeError("the model crashed on this text")
            return str(base(messages))

        return fake_ner(
            anchor=table, explorer=table, gold=GOLD, scripts={"anchor": anchor}
        ).models()

    return factory


def job(**kwargs: Any) -> ExtractJob:
    domain = load_domain("crossner_ai")
    stages = PipelineOptions().model_stages
    values: dict[str, Any] = {
        "domain": domain,
        "adapters": {s: domain.adapter_for(s) for s in stages},
        "backend": BackendSpec(kind="server", servers=("http://127.0.0.1:1",)),
        "concurrency": 4,
    }
    values.update(kwargs)
    return ExtractJob(**values)


def batch(rows: Sequence[tuple[Any, Any]], **extra: Sequence[Any]) -> pa.Table:
    return pa.table({"id": [r[0] for r in rows], "text": [r[1] for r in rows], **extra})


# ---------------------------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------------------------


def test_row_schema_is_fixed_and_follows_output_record() -> None:
    schema = row_schema()
    assert schema.names == list(OutputRecord.model_fields)
    assert all(f.type == pa.string() for f in schema)
    assert {"entities", "triplets", "diagnostics", "usage"} <= set(JSON_FIELDS)
    assert not schema.field("id").nullable and schema.field("error").nullable


def test_row_round_trip_keeps_every_field(make_models: Any) -> None:
    stage = ExtractStage(job(), models_factory=make_models)
    out = stage(batch([("a", texts(1)[0])]))
    [row] = out.to_pylist()
    record = row_to_output(row)
    assert record.error is None
    assert {e.text for e in record.entities} == {"Sepp Hochreiter", "Munich"}
    assert output_to_row(record) == {k: row[k] for k in ROW_FIELDS}
    assert json.loads(row["entities"])[0]["label"] in {"researcher", "location"}


# ---------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------


async def test_stage_rows_equal_the_single_process_results(make_models: Any) -> None:
    rows = [(f"r{i}", t) for i, t in enumerate(texts(10))]
    stage = ExtractStage(job(), models_factory=make_models)
    got = [row_to_output(r) for r in stage(batch(rows)).to_pylist()]
    the_job = job()
    local = [
        r
        async for r in run_records(
            the_job.build_graph(),
            RunContext(the_job.domain, make_models()),
            [InputRecord(id=i, text=t, line=n) for n, (i, t) in enumerate(rows)],
        )
    ]

    def comparable(r: OutputRecord) -> dict[str, Any]:
        return r.model_dump(exclude={"usage"})

    assert [comparable(r) for r in got] == [comparable(r) for r in local]
    assert [r.id for r in got] == [i for i, _ in rows]


def test_bad_rows_are_error_rows_and_extra_columns_pass_through(make_models: Any) -> None:
    stage = ExtractStage(job(), models_factory=make_models)
    table = batch(
        [("ok", texts(1)[0]), ("notext", None), (None, "x"), ("boom", "BOOM")],
        seq=pa.array([10, 11, 12, 13], type=pa.int64()),
        error=["input column named like an output column", None, None, None],
    )
    out = stage(table)
    assert out.schema == row_schema([pa.field("seq", pa.int64())])
    rows = out.to_pylist()
    assert [r["id"] for r in rows] == ["ok", "notext", "", "boom"]
    assert [r["seq"] for r in rows] == [10, 11, 12, 13]
    assert rows[0]["error"] is None
    assert "text" in rows[1]["error"]
    assert "id" in rows[2]["error"]
    assert "crashed" in rows[3]["error"]
    ints = stage(pa.table({"id": pa.array([7], pa.int64()), "text": texts(1)})).to_pylist()
    assert ints[0]["id"] == "7" and ints[0]["error"] is None


def test_numpy_batches_are_accepted(make_models: Any) -> None:
    import numpy as np

    stage = ExtractStage(job(), models_factory=make_models)
    out = stage({"id": np.array(["a", "b"]), "text": np.array(texts(2))})
    assert out.column("id").to_pylist() == ["a", "b"]
    assert out.column("error").to_pylist() == [None, None]


def test_a_batch_that_fails_as_a_whole_becomes_error_rows(
    make_models: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from samalign.batch import ray_stage

    real = ray_stage.run_records

    async def breaks_after_two(*args: Any, **kwargs: Any) -> Any:
        n = 0
        async for result in real(*args, **kwargs):
            if n == 2:
                raise MemoryError("out of memory mid-batch")
            n += 1
            yield result

    monkeypatch.setattr(ray_stage, "run_records", breaks_after_two)
    stage = ExtractStage(job(), models_factory=make_models)
    rows = stage(batch([(f"r{i}", t) for i, t in enumerate(texts(5))])).to_pylist()
    assert [r["id"] for r in rows] == ["r0", "r1", "r2", "r3", "r4"]
    assert [r["error"] is None for r in rows] == [True, True, False, False, False]
    assert "MemoryError" in rows[2]["error"]


def test_all_null_error_column_still_writes_parquet_with_later_errors(
    make_models: Any, tmp_path: Path
) -> None:
    stage = ExtractStage(job(), models_factory=make_models)
    first = stage(batch([("a", texts(1)[0])]))  # error null in every row
    second = stage(batch([("b", None)]))  # error set
    assert first.schema == second.schema
    pq.write_table(pa.concat_tables([first, second]), tmp_path / "out.parquet")
    back = pq.read_table(tmp_path / "out.parquet")
    assert back.column("error").to_pylist()[0] is None
    assert back.column("error").to_pylist()[1]


def test_job_is_plain_data_and_its_fingerprint_ignores_where_servers_are() -> None:
    a = job()
    b = ExtractJob.model_validate(json.loads(a.model_dump_json()))
    assert a == b
    moved = job(backend=BackendSpec(kind="server", servers=("http://10.0.0.1:8000",)))
    assert moved.fingerprint() == a.fingerprint()
    assert job(options=PipelineOptions(use_anchor=False)).fingerprint() != a.fingerprint()
    with pytest.raises(ConfigError, match="relation types"):
        sentence_graph_of(load_domain("crossner_ai"), "joint")
    assert sentence_graph_of(load_domain("conll04"), "document") == "joint"


def test_backend_spec_rejects_inconsistent_settings() -> None:
    with pytest.raises(ConfigError, match="server URL"):
        BackendSpec(kind="server")
    with pytest.raises(ConfigError, match="model directory"):
        BackendSpec(kind="transformers")
    with pytest.raises(ConfigError, match="do not apply"):
        BackendSpec(kind="transformers", model_dir=Path("m"), servers=("http://x:1",))


# ---------------------------------------------------------------------------------------------
# the driver, with Ray replaced by the stage in this process
# ---------------------------------------------------------------------------------------------


class FakeRay:
    """Stands in for ``_run_on_ray``: runs the stage here, optionally dropping or repeating."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.sent: list[int] = []
        self.crash_after: int | None = None
        self.drop: set[str] = set()
        self.repeat = False

    def __call__(
        self,
        job: ExtractJob,
        records: Sequence[InputRecord],
        send: Sequence[int],
        options: RayOptions,
        models_factory: Any,
    ) -> Iterator[tuple[int, OutputRecord]]:
        stage = ExtractStage(job, models_factory=self.factory)
        delivered = 0
        for start in range(0, len(send), options.batch_size):
            chunk = list(send[start : start + options.batch_size])
            self.sent += chunk
            table = pa.table(
                {
                    "id": [records[s].id for s in chunk],
                    "text": [records[s].text for s in chunk],
                    "_samalign_seq": chunk,
                }
            )
            for row in stage(table).to_pylist():
                if row["id"] in self.drop:
                    continue
                if self.crash_after is not None and delivered >= self.crash_after:
                    raise KeyboardInterrupt  # the driver dies mid-run
                delivered += 1
                yield row["_samalign_seq"], row_to_output(row)
                if self.repeat:
                    yield row["_samalign_seq"], row_to_output(row)


@pytest.fixture
def fake_ray(make_models: Any, monkeypatch: pytest.MonkeyPatch) -> FakeRay:
    fake = FakeRay(make_models)
    monkeypatch.setattr(ray_job, "_run_on_ray", fake)
    return fake


def write_inputs(tmp_path: Path, n: int, files: int = 3) -> list[Path]:
    paths = []
    all_texts = texts(n)
    per = (n + files - 1) // files
    for f in range(files):
        path = tmp_path / f"in{f}.jsonl"
        with open(path, "w", encoding="utf-8") as handle:
            for i in range(f * per, min(n, (f + 1) * per)):
                handle.write(json.dumps({"id": f"s{i}", "text": all_texts[i]}) + "\n")
        paths.append(path)
    return paths


OPTIONS = RayOptions(batch_size=4, shard_size=5, progress=False)


def test_driver_writes_every_record_once_in_input_order(fake_ray: FakeRay, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path, 23)
    with open(inputs[1], "a", encoding="utf-8") as handle:
        handle.write("{not json\n")
        handle.write(json.dumps({"id": "s0", "text": "a duplicate id"}) + "\n")
    out = tmp_path / "out"
    summary = run_ray_extract(job(), inputs, out, options=OPTIONS)
    expected = [r.id for r in read_inputs([str(p) for p in inputs])]
    got = list(read_output(out))
    assert [r.id for r in got] == expected  # every record once, in input order
    assert summary.records == len(expected) == 25 and summary.shards == 5
    assert summary.errors == 2  # the bad line and the duplicate id, each its own row
    assert sum(r.error is None for r in got) == 23
    assert len(fake_ray.sent) == 23  # unreadable records never went to Ray
    assert sorted(p.name for p in out.glob("part-*")) == [f"part-0000{i}.parquet" for i in range(5)]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["records"] == 25 and manifest["fingerprint"] == job().fingerprint()


def test_driver_resumes_after_a_crash_without_duplicates(fake_ray: FakeRay, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path, 23)
    out = tmp_path / "out"
    fake_ray.crash_after = 12
    with pytest.raises(KeyboardInterrupt):
        run_ray_extract(job(), inputs, out, options=OPTIONS)
    written = list(read_output(out))
    assert len(written) == 10  # the two shards complete before the crash; nothing partial
    (out / "part-00003.parquet.tmp").write_bytes(b"half a write")  # a crash mid-write
    fake_ray.crash_after = None
    fake_ray.sent.clear()
    summary = run_ray_extract(job(), inputs, out, options=OPTIONS)
    assert summary.resumed == 10 and summary.ran == 13
    assert len(fake_ray.sent) == 13  # only the unwritten shards were redone
    got = [r.id for r in read_output(out)]
    assert got == [f"s{i}" for i in range(23)]
    assert not list(out.glob("*.tmp"))
    fake_ray.sent.clear()
    again = run_ray_extract(job(), inputs, out, options=OPTIONS)  # nothing left to do
    assert again.resumed == 23 and fake_ray.sent == []


def test_rows_ray_never_returns_become_error_rows_and_duplicates_are_dropped(
    fake_ray: FakeRay, tmp_path: Path
) -> None:
    inputs = write_inputs(tmp_path, 12, files=1)
    out = tmp_path / "out"
    fake_ray.drop = {"s3", "s7"}
    fake_ray.repeat = True
    summary = run_ray_extract(job(), inputs, out, options=OPTIONS)
    got = list(read_output(out))
    assert [r.id for r in got] == [f"s{i}" for i in range(12)]
    lost = [r for r in got if r.error]
    assert [r.id for r in lost] == ["s3", "s7"]
    assert "Ray task" in (lost[0].error or "")
    assert summary.errors == 2 and summary.failed_tasks
    # --retry-errors redoes exactly those two
    fake_ray.drop, fake_ray.repeat = set(), False
    fake_ray.sent.clear()
    summary = run_ray_extract(job(), inputs, out, options=OPTIONS, retry_errors=True)
    assert [fake_ray.sent] == [[3, 7]]
    assert summary.errors == 0
    assert [r.id for r in read_output(out)] == [f"s{i}" for i in range(12)]


def test_driver_refuses_an_output_folder_of_another_job_or_input(
    fake_ray: FakeRay, tmp_path: Path
) -> None:
    inputs = write_inputs(tmp_path, 6, files=1)
    out = tmp_path / "out"
    run_ray_extract(job(), inputs, out, options=OPTIONS)
    with pytest.raises(ConfigError, match="fingerprint"):
        run_ray_extract(
            job(options=PipelineOptions(use_anchor=False)), inputs, out, options=OPTIONS
        )
    with open(inputs[0], "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "new", "text": "one more"}) + "\n")
    with pytest.raises(ConfigError, match=r"plan|records"):
        run_ray_extract(job(), inputs, out, options=OPTIONS)
    with pytest.raises(InputError, match="not found"):
        run_ray_extract(job(), [tmp_path / "missing.jsonl"], tmp_path / "o2", options=OPTIONS)
    with pytest.raises(ConfigError, match="stdin"):
        run_ray_extract(job(), ["-"], tmp_path / "o3", options=OPTIONS)


def test_jsonl_shards_hold_the_same_lines_as_samalign_extract(
    fake_ray: FakeRay, tmp_path: Path
) -> None:
    inputs = write_inputs(tmp_path, 7, files=1)
    out = tmp_path / "out"
    options = RayOptions(batch_size=4, shard_size=5, output_format="jsonl", progress=False)
    run_ray_extract(job(), inputs, out, options=options)
    lines = (out / "part-00000.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5
    first = json.loads(lines[0])
    assert set(first) == set(OutputRecord.model_fields)
    assert isinstance(first["entities"], list)  # nested values, as samalign extract writes


def test_parquet_and_several_inputs_are_read_with_the_jsonl_rules(tmp_path: Path) -> None:
    table = pa.table({"id": ["p1", None, "p1"], "text": ["one", "two", None]})
    pq.write_table(table, tmp_path / "a.parquet")
    (tmp_path / "b.txt").write_text("plain one\n\nplain two\n", encoding="utf-8")
    got = list(read_inputs([str(tmp_path / "a.parquet"), str(tmp_path / "b.txt")]))
    a, b = str(tmp_path / "a.parquet"), str(tmp_path / "b.txt")
    assert [(r.id, r.text) for r in got] == [
        ("p1", "one"),
        (f"{a}:line-2", "two"),
        ("p1", ""),
        (f"{b}:line-1", "plain one"),
        (f"{b}:line-3", "plain two"),
    ]
    assert [r.error is None for r in got] == [True, True, False, True, True]
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "c.parquet")
    with pytest.raises(InputError, match="no 'text' column"):
        list(read_inputs([str(tmp_path / "c.parquet")]))


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--engine", "ray"], "--out DIR"),
        (["--engine", "ray", "--out", "o", "--batch-size", "0"], "--batch-size"),
        (["--engine", "ray", "--out", "o", "--actors", "0"], "--actors"),
        (["--ray-address", "auto"], "options of --engine ray"),
        (["--engine", "local"], "one INPUT"),
        (["--timeout", "0"], "--timeout"),
    ],
)
def test_cli_engine_flags_are_checked(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from samalign import cli

    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "text": "x"}\n', encoding="utf-8")
    second = [str(source)] if extra == ["--engine", "local"] else []
    argv = ["extract", str(source), *second, "--domain", "crossner_ai", "--server", "http://h:1"]
    argv += extra
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_engine_ray_writes_shards_and_reports(
    fake_ray: FakeRay,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from samalign import cli

    checked: list[Any] = []
    monkeypatch.setattr(
        "samalign.serving.vllm_server.check_servers", lambda urls, adapters: checked.append(urls)
    )
    inputs = write_inputs(tmp_path, 9, files=2)
    out = tmp_path / "out"
    argv = ["extract", *map(str, inputs), "--domain", "crossner_ai", "--engine", "ray"]
    argv += ["--server", "http://h:1", "--server", "http://h:2", "--out", str(out), "--quiet"]
    argv += ["--shard-size", "4", "--output-format", "jsonl"]
    assert cli.main(argv) == 0
    assert checked == [("http://h:1", "http://h:2")]
    assert "9 record(s) in 3 shard(s)" in capsys.readouterr().err
    assert [r.id for r in read_output(out)] == [f"s{i}" for i in range(9)]
    assert cli.main(argv) == 0  # resume: nothing to do
    assert "9 already done, 0 run now" in capsys.readouterr().err
