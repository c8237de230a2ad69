"""``samalign extract --engine ray`` on a local Ray cluster against real vLLM CPU servers.

* Ray with scripted models: a worker killed mid-batch is retried; a batch whose worker dies on
  every try becomes error rows and the job goes on.
* Two real vLLM servers (the session's and one of this module), 120 CrossNER sentences in three
  JSONL files: the output equals ``samalign extract``'s (same records, same entities, in input
  order), every id once; then the second server is killed mid-run: the job finishes on the
  other, nothing lost or duplicated; then the driver is ``kill -9``'ed mid-run and rerun: it
  completes without duplicates.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from samalign.batch.job import ExtractJob
from samalign.batch.ray_job import RayOptions, read_output, run_ray_extract
from samalign.batch.records import OutputRecord
from samalign.errors import BackendError, ConfigError
from samalign.evaluation import read_crossner
from samalign.graphs import PipelineOptions
from samalign.prompts import load_domain
from samalign.serving.models import StageModels
from samalign.serving.spec import BackendSpec
from samalign.testing.fakes import fake_stage_models

pytestmark = pytest.mark.integration

N = 120
SAMALIGN = [sys.executable, "-m", "samalign"]
# default schemas and a small completion cap keep the random model fast (docs/benchmarks.md)
PIPELINE = ["--domain", "crossner_ai", "--max-tokens", "48", "--concurrency", "16", "--quiet"]
RAY = ["--engine", "ray", "--ray-cpus", "2", "--batch-size", "20", "--shard-size", "20"]


# ---------------------------------------------------------------------------------------------
# Ray with scripted models: killed workers
# ---------------------------------------------------------------------------------------------


class DyingAnswer:
    """Answers ``text``; the worker process dies on a text with ``KILL`` (once) or ``DOOM``."""

    def __init__(self, text: str, marker: str) -> None:
        self.text, self.marker = text, marker

    def __call__(self, messages: Any) -> str:
        prompt = str(messages[0].content)
        if "DOOM" in prompt or ("KILL" in prompt and not os.path.exists(self.marker)):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)  # the actor's process dies mid-batch
        return self.text


class DyingModels:
    """A picklable models factory for the actors (this module is pickled by value)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __call__(self, job: ExtractJob) -> StageModels:
        return fake_stage_models(
            {
                "anchor": DyingAnswer('{"person": ["Sepp Hochreiter"]}', self.marker),
                "explorer": '{"person": ["Sepp Hochreiter", "LSTM"]}',
                "archetype": '{"Person": ["Sepp Hochreiter"], "Computer_Science": ["LSTM"]}',
                "calibrate": '{"Sepp Hochreiter": "researcher", "LSTM": "algorithm"}',
            }
        )


def scripted_job() -> ExtractJob:
    """A NER job whose models the tests' factories replace (the server is never called)."""
    domain = load_domain("crossner_ai")
    stages = PipelineOptions().model_stages
    return ExtractJob(
        domain=domain,
        adapters={s: domain.adapter_for(s) for s in stages},
        backend=BackendSpec(kind="server", servers=("http://127.0.0.1:1",)),
        concurrency=4,
    )


def test_killed_workers_are_retried_and_a_batch_that_always_kills_is_error_rows(
    tmp_path: Path,
) -> None:
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    source = tmp_path / "in.jsonl"
    with open(source, "w", encoding="utf-8") as handle:
        for i in range(40):
            tag = "KILL " if i == 5 else "DOOM " if i == 33 else ""
            handle.write(json.dumps({"id": f"r{i}", "text": f"{tag}Sepp Hochreiter made LSTM{i}"}))
            handle.write("\n")
    job = scripted_job()
    marker = tmp_path / "killed"
    options = RayOptions(
        num_cpus=2, actors=2, batch_size=10, shard_size=20, max_task_retries=1, progress=False
    )
    summary = run_ray_extract(
        job, [source], tmp_path / "out", options=options, models_factory=DyingModels(str(marker))
    )
    assert marker.exists(), "no worker was killed"
    rows = list(read_output(tmp_path / "out"))
    assert [r.id for r in rows] == [f"r{i}" for i in range(40)]  # every record once, in order
    failed = [r.id for r in rows if r.error]
    assert failed == [f"r{i}" for i in range(30, 40)]  # only the batch that always kills
    assert "worker died" in (rows[33].error or "")
    assert rows[5].error is None and {e.text for e in rows[5].entities} == {"Sepp Hochreiter"}
    assert summary.errors == 10


class BrokenModels:
    def __call__(self, job: ExtractJob) -> StageModels:
        raise ConfigError("no model directory at /nowhere")


def test_a_stage_that_cannot_be_built_fails_the_job_with_a_clear_error(tmp_path: Path) -> None:
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "text": "Sepp Hochreiter"}\n', encoding="utf-8")
    job = scripted_job()
    options = RayOptions(num_cpus=2, actors=1, progress=False)
    with pytest.raises(BackendError, match="the Ray job failed") as info:
        run_ray_extract(
            job, [source], tmp_path / "out", options=options, models_factory=BrokenModels()
        )
    assert "rerun the same command" in str(info.value)
    assert not list((tmp_path / "out").glob("part-*"))


# ---------------------------------------------------------------------------------------------
# real vLLM servers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """120 CrossNER ai dev sentences in three JSONL files."""
    sentences = read_crossner(shared_data / "crossner" / "ai" / "dev.txt")[:N]
    folder = tmp_path_factory.mktemp("ray_inputs")
    paths = []
    for k in range(3):
        path = folder / f"part{k}.jsonl"
        with open(path, "w", encoding="utf-8") as handle:
            for s in sentences[k * N // 3 : (k + 1) * N // 3]:
                handle.write(json.dumps({"id": s.id, "text": s.text}, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def second_server(start_vllm_server: Any) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with start_vllm_server() as running:
        yield running


@pytest.fixture(scope="module")
def reference(
    inputs: list[Path], vllm_server: str, tmp_path_factory: pytest.TempPathFactory
) -> list[OutputRecord]:
    """``samalign extract`` (local engine, one server) over the same records, file by file."""
    folder = tmp_path_factory.mktemp("reference")
    outs = [folder / (path.stem + ".out.jsonl") for path in inputs]
    runs = [  # the three files at once: the server answers them together
        subprocess.Popen(
            [
                *SAMALIGN,
                "extract",
                str(path),
                "--server",
                vllm_server,
                "--out",
                str(out),
                *PIPELINE,
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        for path, out in zip(inputs, outs, strict=True)
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr[-3000:]
    records: list[OutputRecord] = []
    for out in outs:
        with open(out, encoding="utf-8") as handle:
            records += [OutputRecord.model_validate_json(line) for line in handle]
    assert len(records) == N
    return records


def run_cli(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*SAMALIGN, "extract", *args], capture_output=True, text=True, timeout=300, **kwargs
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def comparable(record: OutputRecord) -> dict[str, Any]:
    """What must not depend on the engine (usage holds latencies)."""
    return record.model_dump(exclude={"usage"})


def check_output(out: Path, reference: list[OutputRecord]) -> list[OutputRecord]:
    rows = list(read_output(out))
    assert len(rows) == len({r.id for r in rows}) == N  # every id once
    assert [r.id for r in rows] == [r.id for r in reference]  # in input order
    assert all(r.error is None for r in rows), [r.error for r in rows if r.error][:3]
    by_id = {r.id: r for r in reference}
    assert [comparable(r) for r in sorted(rows, key=lambda r: r.id)] == [
        comparable(by_id[r.id]) for r in sorted(rows, key=lambda r: r.id)
    ]
    return rows


def test_ray_over_two_servers_equals_samalign_extract(
    inputs: list[Path],
    vllm_server: str,
    second_server: tuple[str, Any],
    reference: list[OutputRecord],
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    servers = ["--server", vllm_server, "--server", second_server[0]]
    done = run_cli([*map(str, inputs), *servers, "--out", str(out), *PIPELINE, *RAY])
    assert f"{N} record(s) in 6 shard(s)" in done.stderr
    check_output(out, reference)
    assert sum(len(r.diagnostics) for r in reference) > 0  # the answers were really compared
    # the local engine balances over the same two servers
    local = tmp_path / "local.jsonl"
    run_cli([str(inputs[0]), *servers, "--out", str(local), *PIPELINE])
    with open(local, encoding="utf-8") as handle:
        rows = [OutputRecord.model_validate_json(line) for line in handle]
    assert [comparable(r) for r in rows] == [comparable(r) for r in reference[: N // 3]]


def test_a_server_killed_mid_run_the_job_finishes_on_the_other(
    inputs: list[Path],
    vllm_server: str,
    second_server: tuple[str, subprocess.Popen[bytes]],
    reference: list[OutputRecord],
    tmp_path: Path,
) -> None:
    url, server = second_server
    out = tmp_path / "out"
    argv = [*map(str, inputs), "--server", vllm_server, "--server", url, "--out", str(out)]
    job = subprocess.Popen(
        [*SAMALIGN, "extract", *argv, *PIPELINE, *RAY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_shards(out, 1, job)
    os.killpg(server.pid, signal.SIGKILL)  # the second server dies with requests in flight
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr[-3000:]
    check_output(out, reference)


def test_driver_killed_then_rerun_completes_without_duplicates(
    inputs: list[Path], vllm_server: str, reference: list[OutputRecord], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = [*SAMALIGN, "extract", *map(str, inputs), "--server", vllm_server, "--out", str(out)]
    job = subprocess.Popen(
        [*argv, *PIPELINE, *RAY],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the driver and the local Ray cluster it started
    )
    wait_for_shards(out, 2, job)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=60)
    partial = list(read_output(out))
    assert 0 < len(partial) < N
    done = run_cli([*map(str, inputs), "--server", vllm_server, "--out", str(out), *PIPELINE, *RAY])
    assert f"{len(partial)} already done" in done.stderr
    check_output(out, reference)


def wait_for_shards(out: Path, count: int, job: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 240
    while len(list(out.glob("part-*.parquet"))) < count:
        if job.poll() is not None:
            _, stderr = job.communicate()
            raise AssertionError(f"the job ended before the fault was injected: {stderr[-3000:]}")
        assert time.monotonic() < deadline, "no shard written in time"
        time.sleep(0.2)
