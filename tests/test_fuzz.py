"""Hostile and random input against the real server: every call gets a clean
answer (a result with a status, or a gRPC error with a reason), and the server
keeps serving."""

from __future__ import annotations

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reward_server.embedded import EmbeddedServer
from sdk import RewardClient, Status

METHODS = ["Score", "ScoreBatch", "ListScorers"]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(payload=st.binary(max_size=512), method=st.sampled_from(METHODS))
def test_random_bytes_are_refused_or_answered(server: EmbeddedServer, payload: bytes, method: str) -> None:
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary(f"/arbiter.reward.v1.RewardService/{method}")
        try:
            call(payload, timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT, exc
            assert exc.details()


@FUZZ
@given(
    scorer=st.sampled_from(["math", "format", "length", "composite", "fake", "nope", ""]),
    completion=st.text(max_size=200),
    reference=st.none() | st.text(max_size=40),
    params=st.dictionaries(
        st.sampled_from(["pattern", "tags", "limit", "json", "strict", "x"]), json_values, max_size=3
    ),
    metadata=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
def test_random_samples_always_get_a_status(
    client: RewardClient,
    scorer: str,
    completion: str,
    reference: str | None,
    params: dict,
    metadata: dict,  # type: ignore[type-arg]
) -> None:
    item = {
        "scorer": scorer,
        "completion": completion,
        "reference": reference,
        "params": params,
        "metadata": metadata,
    }
    (result,) = client.score_batch([item])
    assert result.status is not Status.UNSPECIFIED
    assert result.status is not Status.INTERNAL, result.reason
    if not result.ok:
        assert result.reason
    assert client.score(scorer="fake").ok
