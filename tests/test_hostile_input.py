"""Property-based hostile input through the real server: expressions that blow up
sympy, catastrophic regexes in user-supplied format patterns, deep and huge
messages. Each ends in a status within its bound, and the server keeps serving."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reward_server.config import ArbiterConfig, ScorerConfig
from reward_server.embedded import EmbeddedServer
from sdk import RewardClient, Status
from sdk._proto import reward_pb2 as pb

MATH_TIMEOUT_S = 1.0
HOSTILE = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SETTLED = {Status.OK, Status.TIMEOUT, Status.INVALID_INPUT}


@pytest.fixture(scope="module")
def hostile() -> Iterator[tuple[EmbeddedServer, RewardClient]]:
    config = ArbiterConfig(scorers={"math_quick": ScorerConfig(type="math", timeout_s=MATH_TIMEOUT_S)})
    with EmbeddedServer(config, plugins=["sdk.testing"]) as server, RewardClient(server.target) as client:
        yield server, client


def _tower(depth: int, base: str) -> str:
    return base if depth == 0 else f"{base}^{{{_tower(depth - 1, base)}}}"


# Expressions that are cheap to write and expensive to evaluate or compare.
blowups = st.one_of(
    st.builds(_tower, st.integers(2, 6), st.sampled_from(["9", "99", "x", "10"])),
    st.builds(lambda n: f"{n}!" if n < 10**6 else f"({n})!", st.integers(10**4, 10**9)),
    st.builds(lambda d: "(" * d + "1" + ")" * d, st.integers(50, 3000)),
    st.builds(lambda n: "9" * n, st.integers(1000, 20000)),
    st.builds(lambda n: "x^{" + str(n) + "} - 1", st.integers(10**3, 10**7)),
    st.builds(lambda n: "\\sum_{k=1}^{" + str(n) + "} k^{k}", st.integers(10**3, 10**8)),
    st.builds(lambda a, b: f"\\frac{{{a}}}{{{b}}}^{{{a}}}", st.integers(10**5, 10**9), st.integers(2, 99)),
)


@settings(HOSTILE, max_examples=15)  # each blow-up may cost a worker restart
@given(expression=blowups, reference=st.sampled_from(["0", "1", "x^2", "\\infty", "10^{100}"]))
def test_math_blowups_end_in_a_status_within_the_timeout(
    hostile: tuple[EmbeddedServer, RewardClient], expression: str, reference: str
) -> None:
    _, client = hostile
    started = time.perf_counter()
    result = client.score(scorer="math_quick", completion=f"\\boxed{{{expression}}}", reference=reference)
    assert time.perf_counter() - started < MATH_TIMEOUT_S + 4  # worker killed and replaced in time
    assert result.status in SETTLED, result.reason
    assert client.score(scorer="fake").ok


# Nested quantifiers over overlapping alternatives: the shapes that backtrack
# exponentially in a backtracking engine.
atoms = st.sampled_from(["a", "aa", "a?", "\\w", ".", "[ab]", "a*"])
groups = st.builds(lambda xs: "(" + "|".join(xs) + ")", st.lists(atoms, min_size=1, max_size=3))
patterns = st.builds(
    lambda inner, outer, anchor: f"({inner}{outer})+{anchor}",
    groups,
    st.sampled_from(["+", "*", "{1,30}", ""]),
    st.sampled_from(["$", "b", "!$", ""]),
)


@HOSTILE
@given(pattern=patterns, length=st.integers(20, 3000), tail=st.sampled_from(["!", "b", "", "ab!"]))
def test_catastrophic_user_regexes_are_bounded(
    hostile: tuple[EmbeddedServer, RewardClient], pattern: str, length: int, tail: str
) -> None:
    _, client = hostile
    started = time.perf_counter()
    result = client.score(scorer="format", completion="a" * length + tail, params={"pattern": pattern})
    assert time.perf_counter() - started < 3
    assert result.status in SETTLED, result.reason
    if result.status is Status.TIMEOUT:
        assert "s" in result.reason


def _deep_struct(depth: int) -> struct_pb2.Struct:
    root = struct_pb2.Struct()
    node = root
    for _ in range(depth):
        node = node.fields["x"].struct_value
    node.fields["leaf"].number_value = 1
    return root


@pytest.mark.parametrize("depth", [50, 99, 150, 1000])
def test_deep_params_are_refused_or_scored_never_a_crash(
    hostile: tuple[EmbeddedServer, RewardClient], depth: int
) -> None:
    server, client = hostile
    request = pb.ScoreRequest(scorer="fake")
    request.params.CopyFrom(_deep_struct(depth))
    payload = request.SerializeToString()
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary("/arbiter.reward.v1.RewardService/Score")
        try:
            reply = pb.ScoreResponse.FromString(call(payload, timeout=10))
        except grpc.RpcError as exc:
            assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT and exc.details(), exc
        else:
            assert reply.result.status in (pb.OK, pb.INVALID_INPUT), reply
            assert reply.result.status == pb.OK or reply.result.reason
    assert client.score(scorer="fake").ok


@pytest.mark.parametrize(
    "inputs_json",
    [
        pytest.param("[" * 100_000 + "]" * 100_000, id="deep-json"),
        pytest.param('"' + "x" * 200_000 + '"', id="huge-string"),
        pytest.param("1e999999", id="overflowing-number"),
        pytest.param("[NaN]", id="nan"),
        pytest.param("{not json", id="not-json"),
    ],
)
def test_hostile_call_case_json_is_invalid_input_or_scored(
    hostile: tuple[EmbeddedServer, RewardClient], inputs_json: str
) -> None:
    server, client = hostile
    request = pb.ScoreRequest(scorer="fake")
    request.sample.tests.call_cases.fn_name = "f"
    request.sample.tests.call_cases.inputs_json.append(inputs_json)
    request.sample.tests.call_cases.outputs_json.append("1")
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary("/arbiter.reward.v1.RewardService/Score")
        try:
            reply = pb.ScoreResponse.FromString(call(request.SerializeToString(), timeout=30))
        except grpc.RpcError as exc:
            assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), exc
        else:
            assert reply.result.status in (pb.OK, pb.INVALID_INPUT), reply.result
    assert client.score(scorer="fake").ok
