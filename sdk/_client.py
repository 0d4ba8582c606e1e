"""Clients for the reward server: ``RewardClient`` (blocking) and ``AsyncRewardClient``.

Per-sample failures come back as results with a status; exceptions (see
``sdk._errors``) are raised only when a call produced no results at all.

A server that goes away (restart, crash, drain) is ridden out: every call that
fails as UNAVAILABLE is tried again with backoff for up to ``reconnect_s``; a
stream resumes on a new stream with the requests that were not answered yet, so
every item is answered exactly once. Scoring is a pure function of the request,
which is what makes sending a request again safe.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
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
from ._errors import ClientError
from ._proto import reward_pb2 as pb
from ._proto import reward_pb2_grpc as pb_grpc
from ._types import ScoreResult, ScorerInfo

__all__ = ["AsyncRewardClient", "RewardClient"]

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_CHUNK = 512
DEFAULT_CHUNK_BYTES = 16 * 1024 * 1024  # a quarter of the server's default message limit
DEFAULT_RECONNECT_S = 30.0


class _Backoff:
    """Sleeps between tries after UNAVAILABLE: exponential with jitter, 0.2 s up to
    2 s, until ``within_s`` has passed since the first failure."""

    def __init__(self, within_s: float) -> None:
        self._deadline = time.monotonic() + within_s
        self._delay = 0.2
        self.within_s = within_s

    def next_delay(self) -> float | None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            return None
        delay = min(self._delay * random.uniform(0.8, 1.2), left)
        self._delay = min(self._delay * 2, 2.0)
        return delay


def _unavailable(exc: grpc.RpcError) -> bool:
    return hasattr(exc, "code") and exc.code() == grpc.StatusCode.UNAVAILABLE


def _delay_or_raise(exc: grpc.RpcError, backoff: _Backoff) -> float:
    """How long to wait before trying again after ``exc``; raises the client error
    when the failure is not UNAVAILABLE or the reconnect budget is spent."""
    if not _unavailable(exc):
        raise translate_error(exc) from exc
    delay = backoff.next_delay()
    if delay is None:
        error = translate_error(exc)
        if backoff.within_s > 0:
            error.args = (f"{error.args[0]} (still unavailable after retrying for {backoff.within_s:g}s)",)
        raise error from exc
    return delay


class _StreamState:
    """What a resumable stream has sent but not yet had answered, in send order.
    The request source is shared by every attempt, behind a lock: gRPC pulls
    requests on a thread of its own, and an abandoned attempt may still be pulling."""

    def __init__(self, items: Iterable[Mapping[str, Any]]) -> None:
        self._source = (build_request(**{"request_id": str(i), **item}) for i, item in enumerate(items))
        self._lock = threading.Lock()
        self.pending: dict[str, pb.ScoreRequest] = {}
        self._attempt = 0

    def requests(self) -> Iterator[pb.ScoreRequest]:
        """This attempt's requests: the unanswered ones again, then the rest."""
        with self._lock:
            self._attempt += 1
            attempt = self._attempt
            again = list(self.pending.values())
        yield from again
        while True:
            with self._lock:
                if attempt != self._attempt:
                    return  # a newer attempt owns the source now
                request = next(self._source, None)
                if request is None:
                    return
                if request.request_id in self.pending:
                    raise ValueError(f"request_id {request.request_id!r} is used twice in one stream")
                self.pending[request.request_id] = request
            yield request

    def answered(self, request_id: str) -> bool:
        """True the first time an answer for ``request_id`` arrives."""
        with self._lock:
            return self.pending.pop(request_id, None) is not None

    def check_complete(self) -> None:
        """After a stream ended cleanly: every request must have had its answer."""
        if self.pending:
            raise ClientError(f"the stream ended with {len(self.pending)} requests unanswered")

    def stop(self) -> None:
        with self._lock:
            self._attempt += 1


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
        batch_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        reconnect_s: float = DEFAULT_RECONNECT_S,
    ) -> None:
        self._settings = ChannelSettings.build(
            target, token=token, tls=tls, root_certificates=root_certificates, max_attempts=max_attempts
        )
        self.timeout = timeout
        self.wait_for_ready = wait_for_ready
        if batch_chunk_size < 1:
            raise ValueError("batch_chunk_size must be at least 1")
        self.batch_chunk_size = batch_chunk_size
        if batch_chunk_bytes < 1:
            raise ValueError("batch_chunk_bytes must be at least 1")
        self.batch_chunk_bytes = batch_chunk_bytes
        if reconnect_s < 0:
            raise ValueError("reconnect_s must be >= 0 (0: fail at once when the server is unavailable)")
        self.reconnect_s = reconnect_s

    def _batch_parts(
        self, requests: Sequence[pb.ScoreRequest], timeout: float | None
    ) -> Iterator[tuple[Sequence[pb.ScoreRequest], float | None]]:
        """The ScoreBatch calls one ``score_batch`` makes, each with what is left of
        the whole batch's deadline (``timeout`` bounds the batch, not each call)."""
        budget = self.timeout if timeout is None else timeout
        deadline = None if budget is None else time.monotonic() + budget
        for part in chunks(requests, self.batch_chunk_size, self.batch_chunk_bytes):
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            yield part, remaining

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

    def _call(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        """One unary call, tried again while the server is unavailable."""
        backoff = _Backoff(self.reconnect_s)
        while True:
            try:
                return method(request, **self._call_kwargs(timeout))
            except grpc.RpcError as exc:
                time.sleep(_delay_or_raise(exc, backoff))

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
        response = self._call(self._stub.Score, request, timeout)
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
        for part, remaining in self._batch_parts(batch.requests, timeout):
            reply = self._call(self._stub.ScoreBatch, pb.ScoreBatchRequest(requests=part), remaining)
            responses.extend(reply.responses)
        return fill_batch(batch, responses)

    def stream(
        self, items: Iterable[Mapping[str, Any]], *, timeout: float | None = None
    ) -> Iterator[ScoreResult]:
        """Score items over one stream; yields results as they finish (not in order),
        each with ``request_id`` set (the item's own, or its index; unique per stream).
        If the server goes away, the unanswered items are sent again on a new stream."""
        state = _StreamState(items)
        backoff = _Backoff(self.reconnect_s)
        try:
            while True:
                try:
                    for response in self._stub.StreamScore(state.requests(), **self._call_kwargs(timeout)):
                        if state.answered(response.request_id):
                            backoff = _Backoff(self.reconnect_s)  # progress: a fresh budget
                            yield _convert.result_from_proto(response.result, response.request_id)
                except grpc.RpcError as exc:
                    time.sleep(_delay_or_raise(exc, backoff))
                    continue
                state.check_complete()
                return
        finally:
            state.stop()

    def list_scorers(self, *, timeout: float | None = None) -> list[ScorerInfo]:
        reply = self._call(self._stub.ListScorers, pb.ListScorersRequest(), timeout)
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

    async def _call(self, method: Callable[..., Awaitable[Any]], request: Any, timeout: float | None) -> Any:
        """One unary call, tried again while the server is unavailable."""
        backoff = _Backoff(self.reconnect_s)
        while True:
            try:
                return await method(request, **self._call_kwargs(timeout))
            except grpc.RpcError as exc:
                await asyncio.sleep(_delay_or_raise(exc, backoff))

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
        response = await self._call(self._stub.Score, request, timeout)
        return _convert.result_from_proto(response.result, response.request_id)

    async def score_batch(
        self, items: Iterable[Mapping[str, Any]], *, timeout: float | None = None
    ) -> list[ScoreResult]:
        batch = prepare_batch(items)
        responses: list[pb.ScoreResponse] = []
        for part, remaining in self._batch_parts(batch.requests, timeout):
            reply = await self._call(self._stub.ScoreBatch, pb.ScoreBatchRequest(requests=part), remaining)
            responses.extend(reply.responses)
        return fill_batch(batch, responses)

    async def stream(
        self, items: Iterable[Mapping[str, Any]], *, timeout: float | None = None
    ) -> AsyncIterator[ScoreResult]:
        state = _StreamState(items)
        backoff = _Backoff(self.reconnect_s)
        try:
            while True:
                call = self._stub.StreamScore(state.requests(), **self._call_kwargs(timeout))
                try:
                    async for response in call:
                        if state.answered(response.request_id):
                            backoff = _Backoff(self.reconnect_s)  # progress: a fresh budget
                            yield _convert.result_from_proto(response.result, response.request_id)
                except grpc.RpcError as exc:
                    await asyncio.sleep(_delay_or_raise(exc, backoff))
                    continue
                state.check_complete()
                return
        finally:
            state.stop()

    async def list_scorers(self, *, timeout: float | None = None) -> list[ScorerInfo]:
        reply = await self._call(self._stub.ListScorers, pb.ListScorersRequest(), timeout)
        return [_scorer_info(info) for info in reply.scorers]

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
