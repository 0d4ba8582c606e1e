"""Clients for the reward server: ``RewardClient`` (blocking) and ``AsyncRewardClient``.

Per-sample failures come back as results with a status; exceptions (see
``sdk._errors``) are raised only when a call produced no results at all.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from . import _convert
from ._channel import (
    DEFAULT_TARGET,
    ChannelSettings,
    build_request,
    chunks,
    fill_batch,
    prepare_batch,
    translate_error,
)
from ._proto import reward_pb2 as pb
from ._proto import reward_pb2_grpc as pb_grpc
from ._types import ScoreResult, ScorerInfo

__all__ = ["AsyncRewardClient", "RewardClient"]

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_CHUNK = 512


def _scorer_info(info: pb.ScorerInfo) -> ScorerInfo:
    return ScorerInfo(
        name=info.name,
        type=info.type,
        description=info.description,
        params_schema=json.loads(info.params_schema_json or "{}"),
        default_params=json.loads(info.default_params_json or "{}"),
        cpu_bound=info.cpu_bound,
    )


class _ClientBase:
    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | str | Path | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        max_attempts: int = 5,
        wait_for_ready: bool = False,
        batch_chunk_size: int = DEFAULT_CHUNK,
    ) -> None:
        self._settings = ChannelSettings.build(
            target, token=token, tls=tls, root_certificates=root_certificates, max_attempts=max_attempts
        )
        self.timeout = timeout
        self.wait_for_ready = wait_for_ready
        if batch_chunk_size < 1:
            raise ValueError("batch_chunk_size must be at least 1")
        self.batch_chunk_size = batch_chunk_size

    def _call_kwargs(self, timeout: float | None) -> dict[str, Any]:
        return {
            "timeout": self.timeout if timeout is None else timeout,
            "metadata": self._settings.metadata,
            "wait_for_ready": self.wait_for_ready,
        }


class RewardClient(_ClientBase):
    """Blocking client. Thread-safe; one per process is enough.

    ``RewardClient("127.0.0.1:50051").score(scorer="math", completion="\\\\boxed{2}",
    reference="2")`` returns a ``ScoreResult``. ``target`` may be a list of
    addresses: calls are spread round-robin and retried on UNAVAILABLE.
    """

    def __init__(self, target: str | Sequence[str] = DEFAULT_TARGET, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        settings = self._settings
        credentials = settings.credentials()
        if credentials is None:
            self._channel = grpc.insecure_channel(settings.grpc_target, options=settings.options)
        else:
            self._channel = grpc.secure_channel(settings.grpc_target, credentials, options=settings.options)
        self._stub = pb_grpc.RewardServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def score(
        self,
        scorer: str,
        completion: Any = "",
        *,
        prompt: Any = "",
        reference: str | None = None,
        tests: Any = None,
        params: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        request_id: str = "",
        timeout: float | None = None,
    ) -> ScoreResult:
        """Score one sample. Wrong argument types raise TypeError before anything is sent."""
        request = build_request(
            scorer,
            completion,
            prompt=prompt,
            reference=reference,
            tests=tests,
            params=params,
            metadata=metadata,
            request_id=request_id,
        )
        try:
            response = self._stub.Score(request, **self._call_kwargs(timeout))
        except grpc.RpcError as exc:
            raise translate_error(exc) from exc
        return _convert.result_from_proto(response.result, response.request_id)

    def score_batch(
        self, items: Iterable[Mapping[str, Any]], *, timeout: float | None = None
    ) -> list[ScoreResult]:
        """Score many samples; results in the order of ``items``.

        Each item is a dict with the keyword arguments of ``score`` (``scorer``,
        ``completion``, ...). An item that cannot be encoded gets an INVALID_INPUT
        result of its own; the rest are still scored.
        """
        batch = prepare_batch(items)
        responses: list[pb.ScoreResponse] = []
        for part in chunks(batch.requests, self.batch_chunk_size):
            try:
                reply = self._stub.ScoreBatch(
                    pb.ScoreBatchRequest(requests=part), **self._call_kwargs(timeout)
                )
            except grpc.RpcError as exc:
                raise translate_error(exc) from exc
            responses.extend(reply.responses)
        return fill_batch(batch, responses)

    def stream(
        self, items: Iterable[Mapping[str, Any]], *, timeout: float | None = None
    ) -> Iterator[ScoreResult]:
        """Score items over one stream; yields results as they finish (not in order),
        each with ``request_id`` set (the item's own, or its index)."""
        requests = (build_request(**{"request_id": str(i), **item}) for i, item in enumerate(items))
        try:
            for response in self._stub.StreamScore(requests, **self._call_kwargs(timeout)):
                yield _convert.result_from_proto(response.result, response.request_id)
        except grpc.RpcError as exc:
            raise translate_error(exc) from exc

    def list_scorers(self, *, timeout: float | None = None) -> list[ScorerInfo]:
        try:
            reply = self._stub.ListScorers(pb.ListScorersRequest(), **self._call_kwargs(timeout))
        except grpc.RpcError as exc:
            raise translate_error(exc) from exc
        return [_scorer_info(info) for info in reply.scorers]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRewardClient(_ClientBase):
    """The asyncio twin of ``RewardClient``; create and use it inside one event loop."""

    def __init__(self, target: str | Sequence[str] = DEFAULT_TARGET, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        settings = self._settings
        credentials = settings.credentials()
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(settings.grpc_target, options=settings.options)
        else:
            self._channel = grpc.aio.secure_channel(
                settings.grpc_target, credentials, options=settings.options
            )
        self._stub = pb_grpc.RewardServiceStub(self._channel)  # type: ignore[no-untyped-call]

    async def score(
        self,
        scorer: str,
        completion: Any = "",
        *,
        prompt: Any = "",
        reference: str | None = None,
        tests: Any = None,
        params: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        request_id: str = "",
        timeout: float | None = None,
    ) -> ScoreResult:
        request = build_request(
            scorer,
            completion,
            prompt=prompt,
            reference=reference,
            tests=tests,
            params=params,
            metadata=metadata,
            request_id=request_id,
        )
        try:
            response = await self._stub.Score(request, **self._call_kwargs(timeout))
        except grpc.RpcError as exc:
            raise translate_error(exc) from exc
        return _convert.result_from_proto(response.result, response.request_id)

    async def score_batch(
        self, items: Iterable[Mapping[str, Any]], *, timeout: float | None = None
    ) -> list[ScoreResult]:
        batch = prepare_batch(items)
        responses: list[pb.ScoreResponse] = []
        for part in chunks(batch.requests, self.batch_chunk_size):
            try:
                reply = await self._stub.ScoreBatch(
                    pb.ScoreBatchRequest(requests=part), **self._call_kwargs(timeout)
                )
            except grpc.RpcError as exc:
                raise translate_error(exc) from exc
            responses.extend(reply.responses)
        return fill_batch(batch, responses)

    async def stream(
        self, items: Iterable[Mapping[str, Any]], *, timeout: float | None = None
    ) -> AsyncIterator[ScoreResult]:
        requests = [build_request(**{"request_id": str(i), **item}) for i, item in enumerate(items)]
        call = self._stub.StreamScore(iter(requests), **self._call_kwargs(timeout))
        try:
            async for response in call:
                yield _convert.result_from_proto(response.result, response.request_id)
        except grpc.RpcError as exc:
            raise translate_error(exc) from exc

    async def list_scorers(self, *, timeout: float | None = None) -> list[ScorerInfo]:
        try:
            reply = await self._stub.ListScorers(pb.ListScorersRequest(), **self._call_kwargs(timeout))
        except grpc.RpcError as exc:
            raise translate_error(exc) from exc
        return [_scorer_info(info) for info in reply.scorers]

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
