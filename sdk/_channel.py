"""What the sync and async clients share: channel settings, request building and
error translation. Kept apart so the two clients differ only in how they wait.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from . import _convert
from ._errors import (
    AuthenticationError,
    ClientError,
    DeadlineExceededError,
    RequestRejectedError,
    ServerUnavailableError,
)
from ._proto import reward_pb2 as pb
from ._types import Sample, ScoreResult, Status

SERVICE_NAME = "arbiter.reward.v1.RewardService"
DEFAULT_TARGET = "127.0.0.1:50051"


@dataclass(frozen=True)
class ChannelSettings:
    """How to reach the server. Retries and load balancing are gRPC's own (service
    config), not a hand-rolled loop: they apply per attempt, inside the deadline."""

    targets: tuple[str, ...]
    token: str | None = None
    tls: bool = False
    root_certificates: bytes | None = None
    max_attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    max_message_bytes: int = 64 * 1024 * 1024

    @classmethod
    def build(
        cls,
        target: str | Sequence[str],
        *,
        token: str | None,
        tls: bool,
        root_certificates: bytes | str | Path | None,
        max_attempts: int,
    ) -> ChannelSettings:
        targets = (target,) if isinstance(target, str) else tuple(target)
        if not targets:
            raise ValueError("give at least one target address")
        roots: bytes | None
        if root_certificates is None or isinstance(root_certificates, bytes):
            roots = root_certificates
        else:
            roots = Path(root_certificates).read_bytes()
        if not 1 <= max_attempts <= 5:
            raise ValueError("max_attempts must be between 1 and 5 (gRPC's retry limit)")
        return cls(
            targets=targets,
            token=token,
            tls=tls or roots is not None,
            root_certificates=roots,
            max_attempts=max_attempts,
        )

    @property
    def grpc_target(self) -> str:
        """One gRPC target; several addresses become an ``ipv4:``/``ipv6:`` list
        that the round_robin policy spreads calls over."""
        if len(self.targets) == 1:
            return self.targets[0]
        families, addresses = set(), []
        for target in self.targets:
            host, _, port = target.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"target {target!r} must be host:port when several are given")
            host = host.strip("[]")
            family, _, _, _, sockaddr = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0]
            families.add(family)
            ip = sockaddr[0]
            addresses.append(f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}")
        if len(families) != 1:
            raise ValueError("several targets must all be IPv4 or all IPv6")
        scheme = "ipv6" if families == {socket.AF_INET6} else "ipv4"
        return f"{scheme}:{','.join(addresses)}"

    @property
    def options(self) -> list[tuple[str, Any]]:
        method: dict[str, Any] = {"name": [{"service": SERVICE_NAME}]}
        if self.max_attempts > 1:  # gRPC rejects a retry policy of one attempt
            method["retryPolicy"] = {
                "maxAttempts": self.max_attempts,
                "initialBackoff": f"{self.initial_backoff_s}s",
                "maxBackoff": f"{self.max_backoff_s}s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            }
        service_config = {"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [method]}
        return [
            ("grpc.service_config", json.dumps(service_config)),
            ("grpc.enable_retries", 1),
            # gRPC retries only calls that fit its retry buffer (256 KiB by default);
            # a group of completions is larger, and would silently get no retries.
            ("grpc.per_rpc_retry_buffer_size", self.max_message_bytes),
            ("grpc.retry_buffer_size", 4 * self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
        ]

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(root_certificates=self.root_certificates)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


@dataclass
class PreparedBatch:
    """Requests ready to send, and results already known for samples that could not
    even be encoded (they fail alone, never the whole batch)."""

    requests: list[pb.ScoreRequest]
    positions: list[int]  # index in the caller's list of each request
    results: list[ScoreResult | None]


_ITEM_KEYS = {"scorer", "completion", "prompt", "reference", "tests", "params", "metadata", "request_id"}


def build_request(
    scorer: str,
    completion: Any = "",
    *,
    prompt: Any = "",
    reference: str | None = None,
    tests: Any = None,
    params: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    request_id: str = "",
) -> pb.ScoreRequest:
    """One request from loose values; raises TypeError/ValueError when they are wrong."""
    if not isinstance(scorer, str) or not scorer:
        raise TypeError("scorer must be a non-empty string")
    if params is not None and not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict, not {type(params).__name__}")
    sample = Sample.build(completion, prompt=prompt, reference=reference, tests=tests, metadata=metadata)
    return _convert.request_to_proto(scorer, sample, params, request_id)


def prepare_batch(items: Iterable[Mapping[str, Any]]) -> PreparedBatch:
    batch = PreparedBatch(requests=[], positions=[], results=[])
    for index, item in enumerate(items):
        batch.results.append(None)
        try:
            if not isinstance(item, Mapping):
                raise TypeError(f"batch items must be dicts, not {type(item).__name__}")
            unknown = set(item) - _ITEM_KEYS
            if unknown:
                raise TypeError(f"unknown keys {sorted(unknown)}; allowed: {sorted(_ITEM_KEYS)}")
            request = build_request(**{"request_id": str(index), **item})
        except (TypeError, ValueError) as exc:
            scorer = item.get("scorer", "") if isinstance(item, Mapping) else ""
            batch.results[index] = ScoreResult.failure(
                Status.INVALID_INPUT, f"rejected by the client: {exc}", scorer=str(scorer)
            )
            continue
        batch.requests.append(request)
        batch.positions.append(index)
    return batch


def fill_batch(batch: PreparedBatch, responses: Sequence[pb.ScoreResponse]) -> list[ScoreResult]:
    if len(responses) != len(batch.requests):
        raise ClientError(
            f"server answered {len(responses)} results for {len(batch.requests)} requests",
            code="INTERNAL",
        )
    for position, request, response in zip(batch.positions, batch.requests, responses, strict=True):
        batch.results[position] = _convert.result_from_proto(response.result, request.request_id)
    return [r for r in batch.results if r is not None]


def translate_error(exc: grpc.RpcError) -> ClientError:
    """A gRPC failure of the whole call as one of the SDK's client errors."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    name = code.name if code is not None else "UNKNOWN"
    if code == grpc.StatusCode.UNAVAILABLE:
        return ServerUnavailableError(f"server unavailable: {details}", code=name)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceededError(f"deadline exceeded: {details}", code=name)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return AuthenticationError(f"not authorised: {details}", code=name)
    if code in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    ):
        return RequestRejectedError(f"request rejected ({name}): {details}", code=name)
    return ClientError(f"call failed ({name}): {details}", code=name)


_FRAMING_BYTES = 6  # a repeated field's tag and length prefix, at most


def chunks(requests: Sequence[Any], size: int, max_bytes: int) -> Iterable[Sequence[Any]]:
    """Consecutive runs of at most ``size`` requests and ``max_bytes`` encoded bytes,
    so a batch of long completions is not refused whole for its size. A request
    larger than ``max_bytes`` goes alone (the server judges it, sample by sample)."""
    part: list[Any] = []
    total = 0
    for request in requests:
        encoded = request.ByteSize() + _FRAMING_BYTES
        if part and (len(part) >= size or total + encoded > max_bytes):
            yield part
            part, total = [], 0
        part.append(request)
        total += encoded
    if part:
        yield part
