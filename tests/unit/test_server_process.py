"""The helper that starts a vLLM server for a model directory and waits for it.

A fake interpreter stands in for vLLM's: it exits early, never answers, or records the command
it was given. Unit tests open no connection (see conftest), so the readiness probe meets a
refused port, or a fake probe for the one test where the server "comes up"; the integration
fixtures run the helper against a real vLLM server.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from samalign import cli
from samalign.errors import BackendError, ConfigError
from samalign.serving import server_process
from samalign.serving.server_process import free_port, running_vllm_server


def _model_dir(root: Path) -> Path:
    (root / "base").mkdir(parents=True)
    (root / "base" / "config.json").write_text("{}")
    for name in ("anchor", "calibrate"):
        folder = root / "adapters" / name
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "bias": "none"}))
        header = b'{"__metadata__":{}}'
        (folder / "adapter_model.safetensors").write_bytes(
            len(header).to_bytes(8, "little") + header
        )
    return root


def _fake_python(path: Path, body: str) -> str:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


# what the fake records: its command line, its pid and that of a child it leaves running
RECORDING = """
import json, os, subprocess, sys, time
out = os.path.dirname(os.path.abspath(__file__))
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with open(os.path.join(out, "pids.json"), "w") as f:
    json.dump({"leader": os.getpid(), "child": child.pid}, f)
with open(os.path.join(out, "argv.json"), "w") as f:
    json.dump(sys.argv, f)
print("fake vllm: loading the model", flush=True)
time.sleep(120)
"""


def _gone(pid: int) -> bool:
    """Not running (or a zombie waiting for its new parent to reap it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] in ("Z", "X")


def _wait_gone(pid: int) -> bool:
    import time

    for _ in range(200):  # a kill is delivered at once; allow the kernel a moment
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_a_server_that_exits_early_is_an_error_naming_the_log(
    tmp_path: Path, network_guard: Any
) -> None:
    port = free_port()
    network_guard.refuse("127.0.0.1", port)  # nothing listens until it has exited
    python = _fake_python(
        tmp_path / "python",
        "import sys\nprint('RuntimeError: Failed to infer device type', file=sys.stderr)\n"
        "sys.exit(3)\n",
    )
    log = tmp_path / "logs" / "server.log"
    with (
        pytest.raises(BackendError, match="exited with code 3 before it answered") as caught,
        running_vllm_server(_model_dir(tmp_path / "m"), python=python, port=port, log_path=log),
    ):
        pytest.fail("the block must not run")
    message = str(caught.value)
    assert str(log) in message
    assert "RuntimeError: Failed to infer device type" in message  # the log's tail
    assert log.is_file()


def test_a_server_that_never_comes_up_is_stopped_with_its_whole_group(
    tmp_path: Path, network_guard: Any
) -> None:
    python = _fake_python(tmp_path / "python", RECORDING)
    port = free_port()
    network_guard.refuse("127.0.0.1", port)  # nothing listens: the probe is refused
    with (
        pytest.raises(
            BackendError, match=r"did not answer http://127\.0\.0\.1:\d+/v1/models"
        ) as caught,
        running_vllm_server(
            _model_dir(tmp_path / "m"), python=python, port=port, timeout=1.0, stop_timeout=5.0
        ),
    ):
        pytest.fail("the block must not run")
    message = str(caught.value)
    assert "within 1 s" in message and "fake vllm: loading the model" in message
    assert "samalign-server-" in message  # the default log is kept and named after a failure
    pids = json.loads((tmp_path / "pids.json").read_text())
    assert _wait_gone(pids["leader"]) and _wait_gone(pids["child"])
    Path(message.split("its log is ", 1)[1].split(";", 1)[0]).unlink()


def test_it_runs_what_samalign_serve_runs_and_stops_it_on_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    python = _fake_python(tmp_path / "python", RECORDING)
    root = _model_dir(tmp_path / "m")
    probes: list[str] = []

    def probe(url: str, **kwargs: Any) -> httpx.Response:
        probes.append(url)
        if not (tmp_path / "argv.json").is_file():
            raise httpx.ConnectError("connection refused")
        return httpx.Response(200, json={"data": []})

    monkeypatch.setattr(server_process.httpx, "get", probe)
    log = tmp_path / "server.log"
    port = 18765
    extra = ["--dtype", "float32"]
    with running_vllm_server(
        root, python=python, port=port, log_path=log, max_model_len=4096, extra_args=extra
    ) as server:
        url = server.url
        assert url == f"http://127.0.0.1:{port}" and server.log_path == log
        pids = json.loads((tmp_path / "pids.json").read_text())
        assert server.process.pid == pids["leader"]
        assert not _gone(pids["leader"]) and not _gone(pids["child"])
    assert probes and set(probes) == {f"{url}/v1/models"}
    assert _wait_gone(pids["leader"]) and _wait_gone(pids["child"])
    assert "fake vllm: loading the model" in log.read_text()  # an explicit log is kept

    argv = ["serve", "--model-dir", str(root), "--python", python, "--port", str(port)]
    assert cli.main([*argv, "--max-model-len", "4096", "--dry-run", "--", *extra]) == 0
    served = json.loads((tmp_path / "argv.json").read_text())
    assert [python, *served[1:]] == shlex.split(capsys.readouterr().out.strip())


def test_an_interpreter_that_cannot_run_is_a_config_error(tmp_path: Path) -> None:
    with (
        pytest.raises(ConfigError, match="cannot run /nowhere/bin/python"),
        running_vllm_server(_model_dir(tmp_path / "m"), python="/nowhere/bin/python"),
    ):
        pytest.fail("the block must not run")


def test_a_bad_model_directory_fails_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with (
        pytest.raises(ConfigError, match="not a samalign model directory"),
        running_vllm_server(tmp_path / "m", python="/nowhere/bin/python"),
    ):
        pytest.fail("the block must not run")
    assert not os.listdir(tmp_path / "m")
