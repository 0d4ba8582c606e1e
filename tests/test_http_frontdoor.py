"""The HTTP front door against a real server: SandboxFusion's own client on
/run_code, OpenRLHF's request code on /get_reward, plain JSON, auth and limits."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
import requests
import sandbox_fusion
from sandbox_fusion import RunCodeRequest, RunStatus, SummaryMapping

from reward_server.config import ArbiterConfig, ConfigError, load_config
from reward_server.embedded import EmbeddedServer
from reward_server.http._openrlhf import MIN_OVERLAP, Unsplittable, split_query
from reward_server.http._sandbox_fusion import RunCodeHandler
from sandbox import Sandbox

TOKEN = "correct horse"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    http = {"openrlhf_scorer": "math", "run_code_max_timeout_s": 5, "run_code_max_concurrency": 4}
    with EmbeddedServer(
        plugins=["sdk.testing"], token=TOKEN, http=http, max_request_bytes=256 * 1024
    ) as running:
        yield running


def with_credentials(url: str) -> str:
    """The URL with the token as Basic-auth password, for clients that take only a URL."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"trainer:{TOKEN.replace(' ', '%20')}@{parts.netloc}"))


def run_code(server: EmbeddedServer, **fields: Any) -> sandbox_fusion.RunCodeResponse:
    """SandboxFusion's client, as users call it."""
    sandbox_fusion.set_endpoint(with_credentials(server.http_url))
    return sandbox_fusion.run_code(RunCodeRequest(**fields), max_attempts=1, client_timeout=60)


SUMMARY = SummaryMapping(
    Success="ok",
    Failed="failed",
    CompileFailed="compile_failed",
    CompileTimeout="compile_timeout",
    RunFailed="run_failed",
    RunTimeout="run_timeout",
)


# ---- SandboxFusion /run_code, through the sandbox-fusion client package ----


def test_run_code_python_reads_stdin(server: EmbeddedServer) -> None:
    response = run_code(server, code="print(input()[::-1])", stdin="abc", language="python")
    assert response.status == RunStatus.Success
    assert response.run_result.stdout == "cba\n"
    assert response.run_result.return_code == 0
    assert response.compile_result is None
    assert sandbox_fusion.summary_run_code_result(response, SUMMARY) == "ok"


def test_run_code_runtime_error_keeps_exit_code(server: EmbeddedServer) -> None:
    code = "import sys\nprint('x', file=sys.stderr)\nsys.exit(3)"
    response = run_code(server, code=code, language="python")
    assert response.status == RunStatus.Failed
    assert response.run_result.return_code == 3
    assert "x" in response.run_result.stderr
    assert sandbox_fusion.summary_run_code_result(response, SUMMARY) == "run_failed"


def test_run_code_time_limit(server: EmbeddedServer) -> None:
    response = run_code(server, code="while True: pass", language="python", run_timeout=1)
    assert response.status == RunStatus.Failed
    assert response.run_result.status == "TimeLimitExceeded"
    assert sandbox_fusion.summary_run_code_result(response, SUMMARY) == "run_timeout"


def test_run_code_timeout_is_capped_by_config(server: EmbeddedServer) -> None:
    response = run_code(server, code="import time\ntime.sleep(30)", language="python", run_timeout=600)
    assert response.run_result.status == "TimeLimitExceeded"
    assert response.run_result.execution_time < 15  # run_code_max_timeout_s = 5


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler here")
def test_run_code_cpp_compiles_and_runs(server: EmbeddedServer) -> None:
    code = "#include <iostream>\nint main(){int a,b;std::cin>>a>>b;std::cout<<a+b<<std::endl;}"
    response = run_code(server, code=code, stdin="2 40", language="cpp")
    assert response.status == RunStatus.Success, response
    assert response.compile_result.status == "Finished" and response.compile_result.return_code == 0
    assert response.run_result.stdout.strip() == "42"


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler here")
def test_run_code_compile_error(server: EmbeddedServer) -> None:
    response = run_code(server, code="int main( { return 0; }", language="cpp")
    assert response.status == RunStatus.Failed
    assert response.run_result is None
    assert response.compile_result.return_code != 0
    assert "error" in response.compile_result.stderr
    assert sandbox_fusion.summary_run_code_result(response, SUMMARY) == "compile_failed"


@pytest.mark.skipif(shutil.which("node") is None, reason="no node here")
def test_run_code_nodejs(server: EmbeddedServer) -> None:
    response = run_code(server, code="console.log(6 * 7)", language="nodejs")
    assert response.status == RunStatus.Success, response
    assert response.run_result.stdout == "42\n"


def test_run_code_unsupported_language_is_a_sandbox_error(server: EmbeddedServer) -> None:
    with pytest.raises(Exception, match="'java' is not supported"):
        run_code(server, code="class A {}", language="java")


def test_run_code_as_verl_posts_it(server: EmbeddedServer) -> None:
    """verl's sandbox_fusion utils: a JSON text body with memory_limit_MB, read with .json()."""
    payload = json.dumps(
        {
            "compile_timeout": 10,
            "run_timeout": 10,
            "code": "print(int(input()) * 2)",
            "stdin": "21",
            "memory_limit_MB": 1024,
            "language": "python",
            "files": {},
            "fetch_files": [],
        }
    )
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    response = requests.post(
        with_credentials(server.http_url) + "/run_code", headers=headers, data=payload, timeout=60
    )
    response.raise_for_status()
    answer = response.json()
    assert answer["status"] == "Success"
    assert answer["run_result"]["status"] == "Finished"
    assert answer["run_result"]["stdout"].rstrip("\n") == "42"


def test_run_code_invalid_body_is_422(server: EmbeddedServer) -> None:
    response = requests.post(server.http_url + "/run_code", json={"language": "python"}, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "INVALID_ARGUMENT"


# ---- OpenRLHF /get_reward, posted as OpenRLHF's code posts it ----


async def openrlhf_post(url: str, data: dict[str, Any]) -> Any:
    """openrlhf/utils/agent.py, SingleTurnAgentExecutor._fetch_rewards_via_http._post_request."""
    timeout = aiohttp.ClientTimeout(total=180)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.post(url, json=data) as response:
        response.raise_for_status()
        return await response.json()


def test_openrlhf_rewards(server: EmbeddedServer) -> None:
    prompt = "<|user|>What is 1/2 as a decimal?<|assistant|>"
    queries = [prompt + "It is \\boxed{0.5}<|end|>", prompt + "It is \\boxed{0.7}<|end|>"]
    payload = {"query": queries, "prompts": [prompt, prompt], "labels": ["\\frac{1}{2}", "\\frac{1}{2}"]}
    url = with_credentials(server.http_url) + "/get_reward"
    rewards_info = asyncio.run(openrlhf_post(url, payload))
    # How SingleTurnAgentExecutor reads it
    assert rewards_info.get("rewards") == [1.0, 0.0]
    assert rewards_info.get("scores") == [1.0, 0.0]
    assert rewards_info.get("extra_logs") == {"arbiter_bad_output": [0.0, 0.0]}


def test_openrlhf_as_older_versions_post_it(server: EmbeddedServer) -> None:
    """openrlhf/utils/remote_rm_utils.py (before 0.8): requests.post(json=...)."""
    headers = {"Content-Type": "application/json", **AUTH}
    data = {"query": ["1+2? so \\boxed{3}"], "prompts": ["1+2?"], "labels": ["3"]}
    response = requests.post(url=server.http_url + "/get_reward", json=data, headers=headers, timeout=180)
    response.raise_for_status()
    assert response.json()["rewards"] == [1.0]


def test_openrlhf_infrastructure_failure_is_503_not_zero() -> None:
    http = {"openrlhf_scorer": "fake", "openrlhf_params": {"error": "boom"}}
    with EmbeddedServer(plugins=["sdk.testing"], http=http) as running:
        response = requests.post(
            running.http_url + "/get_reward", json={"query": ["x"], "prompts": [""], "labels": [None]}
        )
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "UNAVAILABLE"
    assert [(s["index"], s["status"]) for s in error["samples"]] == [(0, "SCORER_ERROR")]
    assert "boom" in error["samples"][0]["reason"]


def test_openrlhf_malformed_request_is_400(server: EmbeddedServer) -> None:
    response = requests.post(server.http_url + "/get_reward", json={"query": "not a list"}, headers=AUTH)
    assert response.status_code == 400
    assert "query" in response.json()["error"]["message"]


def test_openrlhf_unusable_sample_is_422_not_zero(server: EmbeddedServer) -> None:
    """INVALID_INPUT is a data or config problem (here: no label for math), never a reward."""
    data = {
        "query": ["1+1? \\boxed{2}", "1+2? \\boxed{3}"],
        "prompts": ["1+1?", "1+2?"],
        "labels": ["2", None],
    }
    response = requests.post(server.http_url + "/get_reward", json=data, headers=AUTH)
    assert response.status_code == 422
    error = response.json()["error"]
    assert [(s["index"], s["status"]) for s in error["samples"]] == [(1, "INVALID_INPUT")]
    assert "reference" in error["samples"][0]["reason"]


PROMPT = "<|user|>Write the number one half as a decimal, then box it.<|assistant|>"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (PROMPT + "\\boxed{0.5}", "\\boxed{0.5}"),
        (PROMPT[30:] + "\\boxed{0.5}", "\\boxed{0.5}"),  # OpenRLHF truncated it from the left
        (PROMPT[-MIN_OVERLAP:] + PROMPT[-MIN_OVERLAP:], PROMPT[-MIN_OVERLAP:]),  # longest overlap
    ],
    ids=["whole-prompt", "left-truncated", "response-repeats-prompt-end"],
)
def test_split_query_cuts_the_prompt(query: str, expected: str) -> None:
    assert split_query(query, PROMPT) == (PROMPT, expected)


def test_split_query_is_linear() -> None:
    prompt = "a" * 200_000
    assert split_query("a" * 100_000 + "b", prompt) == (prompt, "b")


def test_openrlhf_left_truncated_prompt_is_cut(server: EmbeddedServer) -> None:
    data = {"query": [PROMPT[30:] + "\\boxed{0.5}"], "prompts": [PROMPT], "labels": ["1/2"]}
    answer = requests.post(server.http_url + "/get_reward", json=data, headers=AUTH).json()
    assert answer["rewards"] == [1.0]


def test_openrlhf_query_without_its_prompt_is_422(server: EmbeddedServer) -> None:
    with pytest.raises(Unsplittable):
        split_query(PROMPT[: -MIN_OVERLAP + 1] + "!" + "\\boxed{0.5}", PROMPT)
    query = "a different prompt entirely \\boxed{0.5}"
    data = {"query": [PROMPT + "\\boxed{0.5}", query], "prompts": [PROMPT, PROMPT], "labels": ["0.5", "0.5"]}
    response = requests.post(server.http_url + "/get_reward", json=data, headers=AUTH)
    assert response.status_code == 422
    (sample,) = response.json()["error"]["samples"]
    assert sample["index"] == 1 and "prompt" in sample["reason"]


SLOW_PLUGIN = """
import asyncio
from pydantic import BaseModel
from sdk import Scorer, ScoreResult


class NoParams(BaseModel):
    pass


class MaybeSlow(Scorer):
    \"\"\"1.0, after a long wait when the completion says "slow" (a hung scorer).\"\"\"

    name = "maybe_slow"
    Params = NoParams

    async def score(self, sample, params):
        if "slow" in sample.completion_text:
            await asyncio.sleep(30)
        return ScoreResult(reward=1.0)
"""


def composite_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> ArbiterConfig:
    (tmp_path / "frontdoor_slow_plugin.py").write_text(SLOW_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = load_config().model_dump()
    data["scorers"] = {
        "blend": {
            "type": "composite",
            "timeout_s": 1.0,
            "params": {
                "components": [
                    {"scorer": "fake", "name": "base", "params": {"reward": 0.25}},
                    {"scorer": "maybe_slow", "name": "slow_part"},
                ]
            },
        }
    }
    return ArbiterConfig.model_validate(data)


def test_openrlhf_extra_logs_keys_are_fixed(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenRLHF concatenates extra_logs across requests (one query each): a sample
    without components (a TIMEOUT) must log the same keys as one with them."""
    config = composite_config(tmp_path, monkeypatch)
    http = {"openrlhf_scorer": "blend", "run_code": False}
    with EmbeddedServer(config, plugins=["sdk.testing", "frontdoor_slow_plugin"], http=http) as running:
        url = running.http_url + "/get_reward"
        fast = requests.post(url, json={"query": ["fast"], "prompts": [""]}).json()
        slow = requests.post(url, json={"query": ["slow"], "prompts": [""]}).json()
    assert fast["rewards"] == [1.25] and slow["rewards"] == [0.0]  # TIMEOUT: a bad output
    keys = {"arbiter_bad_output", "arbiter_base", "arbiter_slow_part"}
    assert set(fast["extra_logs"]) == set(slow["extra_logs"]) == keys
    assert fast["extra_logs"] == {
        "arbiter_bad_output": [0.0],
        "arbiter_base": [0.25],
        "arbiter_slow_part": [1.0],
    }
    assert slow["extra_logs"] == {
        "arbiter_bad_output": [1.0],
        "arbiter_base": [0.0],
        "arbiter_slow_part": [0.0],
    }


@pytest.mark.parametrize(
    ("http", "match"),
    [
        ({"openrlhf_scorer": "maths"}, "openrlhf_scorer = 'maths' is not a served scorer"),
        ({"openrlhf_scorer": "fake", "openrlhf_params": {"rewrd": 1}}, "openrlhf_params do not fit"),
    ],
    ids=["unknown-scorer", "bad-params"],
)
def test_openrlhf_settings_are_checked_at_start(http: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match), EmbeddedServer(plugins=["sdk.testing"], http=http):
        pass


# ---- plain JSON ----


def test_plain_score(server: EmbeddedServer) -> None:
    body = {"scorer": "math", "completion": "\\boxed{0.5}", "reference": "1/2", "request_id": "r1"}
    answer = requests.post(server.http_url + "/v1/score", json=body, headers=AUTH).json()
    assert answer["reward"] == 1.0 and answer["status"] == "OK" and answer["request_id"] == "r1"


def test_plain_score_batch_fails_samples_alone(server: EmbeddedServer) -> None:
    body = {
        "requests": [
            {"scorer": "fake", "params": {"reward": 0.25}},
            {"scorer": "fake", "completion": 7},  # not text: INVALID_INPUT alone
            {"scorer": "nope"},
        ]
    }
    answer = requests.post(server.http_url + "/v1/score_batch", json=body, headers=AUTH).json()
    statuses = [r["status"] for r in answer["results"]]
    assert statuses == ["OK", "INVALID_INPUT", "UNKNOWN_SCORER"]
    assert answer["results"][0]["reward"] == 0.25
    assert answer["results"][1]["reward"] is None  # never a fake 0


def test_plain_scorers(server: EmbeddedServer) -> None:
    answer = requests.get(server.http_url + "/v1/scorers", headers=AUTH).json()
    names = {s["name"] for s in answer["scorers"]}
    assert {"math", "code", "fake"} <= names


# ---- auth, limits, errors ----


@pytest.mark.parametrize(
    "headers",
    # (HTTP trims whitespace around header values, so no trailing-space case here)
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": TOKEN},
    ],
    ids=["none", "wrong", "prefix", "no-scheme"],
)
@pytest.mark.parametrize("path", ["/v1/score", "/get_reward", "/run_code"])
def test_refused_without_the_token(server: EmbeddedServer, headers: dict[str, str], path: str) -> None:
    response = requests.post(server.http_url + path, json={}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"


def test_wrong_basic_password_is_refused(server: EmbeddedServer) -> None:
    response = requests.post(server.http_url + "/v1/score", json={"scorer": "fake"}, auth=("x", "wrong"))
    assert response.status_code == 401


def test_health_is_open(server: EmbeddedServer) -> None:
    assert requests.get(server.http_url + "/health").json() == {"status": "SERVING"}


def test_oversized_body_is_413_json(server: EmbeddedServer) -> None:
    body = {"scorer": "fake", "completion": "x" * 300_000}
    response = requests.post(server.http_url + "/v1/score", json=body, headers=AUTH)
    assert response.status_code == 413
    assert "max_request_bytes" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "data", "status"),
    [
        ("post", "/v1/score", b"{not json", 400),
        ("post", "/v1/score", b"[1, 2]", 400),
        ("post", "/v1/score_batch", b"{}", 400),
        ("get", "/nowhere", b"", 404),
        ("get", "/v1/score", b"", 405),
    ],
    ids=["not-json", "not-object", "no-requests", "unknown-path", "wrong-method"],
)
def test_errors_are_json(server: EmbeddedServer, method: str, path: str, data: bytes, status: int) -> None:
    response = requests.request(method, server.http_url + path, data=data, headers=AUTH)
    assert response.status_code == status
    assert response.json()["error"]["message"]


def test_http_is_off_by_default() -> None:
    with EmbeddedServer(plugins=["sdk.testing"]) as running:
        assert running.server.http_port is None
        with pytest.raises(RuntimeError, match="off"):
            _ = running.http_url


# ---- hostile input: always a 4xx answer, never a 500 ----


@pytest.mark.parametrize(
    "data",
    [b"[" * 100_000 + b"]" * 100_000, b'{"scorer": "fake", "request_id": ' + b"7" * 5000 + b"}"],
    ids=["nested-past-recursion-limit", "integer-over-4300-digits"],
)
@pytest.mark.parametrize("path", ["/v1/score", "/get_reward", "/run_code"])
def test_unreadable_json_is_400(server: EmbeddedServer, data: bytes, path: str) -> None:
    response = requests.post(server.http_url + path, data=data, headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_ARGUMENT"


def test_run_code_lone_surrogate_is_a_sandbox_error(server: EmbeddedServer) -> None:
    body = json.dumps({"code": "print('\ud800')", "language": "python"})  # JSON text may hold one
    response = requests.post(server.http_url + "/run_code", data=body, headers=AUTH)
    assert response.status_code < 500
    assert response.json()["status"] == "SandboxError"
    assert "not valid Unicode" in response.json()["message"]


@pytest.mark.parametrize(
    "header", [b"Bearer \xff\xfe", "Bearer t\u00f6ken".encode()], ids=["not-utf8", "non-ascii"]
)
def test_undecodable_authorization_is_401(server: EmbeddedServer, header: bytes) -> None:
    response = requests.post(
        server.http_url + "/v1/score", json={"scorer": "fake"}, headers={"Authorization": header}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"


def test_integer_request_id_is_taken_as_text(server: EmbeddedServer) -> None:
    answer = requests.post(
        server.http_url + "/v1/score", json={"scorer": "fake", "request_id": 7}, headers=AUTH
    ).json()
    assert (answer["status"], answer["request_id"]) == ("OK", "7")
    batch = {"requests": [{"scorer": "fake", "request_id": 8}]}
    answer = requests.post(server.http_url + "/v1/score_batch", json=batch, headers=AUTH).json()
    assert [(r["status"], r["request_id"]) for r in answer["results"]] == [("OK", "8")]
    response = requests.post(
        server.http_url + "/v1/score", json={"scorer": "fake", "request_id": [1]}, headers=AUTH
    )
    assert response.status_code == 400
    assert "request_id must be a string" in response.json()["error"]["message"]


# ---- life cycle: abandoned requests, stop, failed start ----


def in_flight(running: EmbeddedServer) -> float:
    value = running.server.metrics.registry.get_sample_value("arbiter_rpcs_in_flight")
    return value or 0.0


def wait_for_in_flight(running: EmbeddedServer, expected: float, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if in_flight(running) == expected:
            return True
        time.sleep(0.02)
    return False


def test_disconnected_client_cancels_its_scoring(server: EmbeddedServer) -> None:
    async def hang_up() -> None:
        timeout = aiohttp.ClientTimeout(total=0.5)
        body = {"scorer": "fake", "params": {"delay_s": 5}}
        async with aiohttp.ClientSession(timeout=timeout, headers=AUTH) as session:
            with pytest.raises(TimeoutError):
                await session.post(server.http_url + "/v1/score", json=body)

    started = time.monotonic()
    asyncio.run(hang_up())
    assert wait_for_in_flight(server, 0.0, within_s=2.0), "the abandoned request kept scoring"
    assert time.monotonic() - started < 4  # well before the 5 s the scorer would take
    fake = server.server.scorers["fake"]
    assert not fake.slots.locked()


def test_stop_gives_in_flight_requests_the_grace_it_was_given() -> None:
    running = EmbeddedServer(plugins=["sdk.testing"], http={"run_code": False}).start()
    body = {"scorer": "fake", "params": {"delay_s": 10}}
    outcome: list[str] = []

    def post() -> None:
        try:
            requests.post(running.http_url + "/v1/score", json=body, timeout=30)
        except requests.ConnectionError as exc:  # the request was cut at the end of grace
            outcome.append(type(exc).__name__)

    slow = threading.Thread(target=post, daemon=True)
    slow.start()
    try:
        assert wait_for_in_flight(running, 1.0, within_s=5)
    finally:
        started = time.monotonic()
        running.stop(grace=0.2)  # grace_period_s is 30
    assert time.monotonic() - started < 5
    slow.join(timeout=5)
    assert outcome == ["ConnectionError"]


def test_failed_http_bind_closes_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[bool] = []
    close = RunCodeHandler.close

    def recording_close(self: RunCodeHandler) -> None:
        closed.append(isinstance(self._sandbox, Sandbox))
        close(self)

    monkeypatch.setattr(RunCodeHandler, "close", recording_close)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http = {"port": taken.getsockname()[1], "run_code_allow_weaker_isolation": True}
        with pytest.raises(OSError), EmbeddedServer(plugins=["sdk.testing"], http=http):
            pass
    assert closed[:1] == [True]
