"""The ``arbiter`` command through real processes: serve, score, scorers, graceful
shutdown on SIGTERM, auth, and clear errors for bad configs and plugins."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sdk import AuthenticationError, RewardClient, ScoreResult, Status

ARBITER = [sys.executable, "-m", "reward_server.cli"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ARBITER, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def _wait_healthy(target: str, process: subprocess.Popen[str], limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"server exited early with code {process.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.1)
    raise AssertionError("server did not become healthy in time")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    """Start ``arbiter serve`` with the given extra args; yields a starter function."""
    processes: list[subprocess.Popen[str]] = []

    def start(*extra: str, env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen[str]]:
        port = _free_port()
        log = tmp_path / f"serve-{port}.log"
        with log.open("w") as sink:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                [
                    *ARBITER,
                    "serve",
                    "--port",
                    str(port),
                    "--no-metrics",
                    "--plugin",
                    "sdk.testing",
                    "--workers",
                    "1",
                    *extra,
                ],
                stdout=subprocess.DEVNULL,
                stderr=sink,
                text=True,
                env=env,
            )
        processes.append(process)
        target = f"127.0.0.1:{port}"
        _wait_healthy(target, process)
        return target, process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_scorers_in_process_lists_builtins() -> None:
    done = _run("scorers", "--in-process", "--json")
    assert done.returncode == 0, done.stderr
    names = {entry["name"] for entry in json.loads(done.stdout)}
    assert {"math", "format", "length", "composite"} <= names


def test_score_one_sample_in_process() -> None:
    done = _run(
        "score",
        "--in-process",
        "--scorer",
        "format",
        "--completion",
        "answer: 42",
        "--params",
        json.dumps({"pattern": r"\d+"}),
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["status"], result["reward"]) == ("OK", 1.0)


def test_score_jsonl_file_in_order(tmp_path: Path) -> None:
    lines = [
        {"scorer": "math", "completion": "\\boxed{4}", "reference": "4"},
        {"scorer": "math", "completion": "\\boxed{5}", "reference": "4"},
        {"scorer": "nope", "completion": "x"},
        {"completion": "<answer>1</answer>", "params": {"tags": ["answer"]}},
    ]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    done = _run("score", "--in-process", "--input", str(source), "--output", str(out), "--scorer", "format")
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["status"], r["reward"]) for r in results] == [
        ("OK", 1.0),
        ("OK", 0.0),
        ("UNKNOWN_SCORER", 0.0),
        ("OK", 1.0),
    ]
    assert "summary" in done.stderr


def test_score_against_a_running_server(serve) -> None:  # type: ignore[no-untyped-def]
    target, _ = serve()
    done = _run("score", "--target", target, "--scorer", "fake", "--params", '{"reward": 0.25}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["reward"] == 0.25
    listed = _run("scorers", "--target", target)
    assert listed.returncode == 0 and "fake_cpu" in listed.stdout


def test_sigterm_finishes_in_flight_calls_then_exits(serve) -> None:  # type: ignore[no-untyped-def]
    target, process = serve()
    results: list[ScoreResult] = []

    def slow_call() -> None:
        with RewardClient(target) as client:
            results.append(client.score(scorer="fake", params={"delay_s": 1.5, "reward": 0.5}))

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.5)  # the call is in flight on the server
    process.send_signal(signal.SIGTERM)
    caller.join(timeout=30)
    assert results and results[0].status is Status.OK and results[0].reward == 0.5
    assert process.wait(timeout=30) == 0


def test_token_from_environment_is_required(serve) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "ARBITER_TOKEN": "s3cret-token"}
    target, _ = serve(env=env)
    with RewardClient(target) as anonymous, pytest.raises(AuthenticationError, match="missing"):
        anonymous.score(scorer="fake")
    with RewardClient(target, token="s3cret-token") as client:
        assert client.score(scorer="fake").ok
    clean_env = {k: v for k, v in os.environ.items() if k != "ARBITER_TOKEN"}
    denied = _run("score", "--target", target, "--scorer", "fake", env=clean_env)
    assert denied.returncode != 0 and "not authorised" in denied.stderr
    allowed = _run("score", "--target", target, "--scorer", "fake", "--token", "s3cret-token", env=clean_env)
    assert allowed.returncode == 0, allowed.stderr


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nport = 'many'\n")
    done = _run("serve", "--config", str(bad))
    assert done.returncode != 0
    assert "server.port" in done.stderr


def test_unknown_plugin_is_a_clear_error() -> None:
    done = _run("serve", "--plugin", "no_such_module_anywhere", "--port", str(_free_port()))
    assert done.returncode != 0
    assert "cannot import plugin module 'no_such_module_anywhere'" in done.stderr


def test_serve_writes_structured_json_logs(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    serve()
    (log,) = tmp_path.glob("serve-*.log")
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    serving = next(e for e in entries if e["msg"] == "serving")
    assert serving["level"] == "info" and serving["logger"] == "arbiter.server"
    assert {"math", "format", "fake"} <= set(serving["scorers"])
    assert serving["address"].startswith("127.0.0.1:")


@pytest.mark.skipif(os.geteuid() != 0, reason="the code sandbox needs root")
def test_score_code_with_tests_from_the_command_line() -> None:
    tests = json.dumps({"io_cases": [{"input": "1", "output": "2"}, {"input": "5", "output": "6"}]})
    done = _run(
        "score",
        "--in-process",
        "--scorer",
        "code",
        "--completion",
        "print(int(input()) + 1)",
        "--tests",
        tests,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["reward"] == 1.0
    bad = _run("score", "--in-process", "--scorer", "code", "--tests", "{not json")
    assert bad.returncode != 0 and "--tests" in bad.stderr


def test_a_busy_port_is_a_clear_error_not_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run("serve", "--port", str(port), "--no-metrics", "--log-format", "text")
    assert done.returncode == 1
    assert f"cannot bind 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_with_http_port_answers_json(serve) -> None:  # type: ignore[no-untyped-def]
    requests = pytest.importorskip("requests")
    http_port = _free_port()
    serve("--http-port", str(http_port))
    url = f"http://127.0.0.1:{http_port}"
    body = {"scorer": "math", "completion": "\\boxed{4}", "reference": "4"}
    with requests.Session() as session:
        answer = session.post(f"{url}/v1/score", json=body, timeout=30).json()
        assert (answer["status"], answer["reward"]) == ("OK", 1.0)
        openrlhf = {"query": ["\\boxed{4}"], "labels": ["4"]}
        assert session.post(f"{url}/get_reward", json=openrlhf, timeout=30).json()["rewards"] == [1.0]


def test_a_script_without_the_main_guard_gets_a_clear_error(tmp_path: Path) -> None:
    script = tmp_path / "serve_me.py"
    script.write_text(
        "from reward_server.embedded import EmbeddedServer\nwith EmbeddedServer() as server:\n    pass\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
    )
    assert done.returncode != 0
    assert "worker process exited during start-up (exit code 1)" in done.stderr
    assert '__name__ == "__main__"' in done.stderr
    assert "process object is closed" not in done.stderr
