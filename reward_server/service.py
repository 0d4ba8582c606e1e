"""The ``arbiter.reward.v1.RewardService`` handlers.

Thin on purpose: decode, hand each sample to the dispatcher, encode. A sample
protobuf cannot decode (invalid UTF-8 in a string field) gets INVALID_INPUT on its
own, in a batch or a stream alike (the batch's framing is walked by hand, see
``wire.py``); a ``Score`` call or a batch whose bytes are not a message at all is
refused with INVALID_ARGUMENT and a reason, instead of gRPC's opaque INTERNAL. A
sample that decodes but is malformed or too large gets INVALID_INPUT on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import DecodeError, Message

from sdk import ScoreResult, Status
from sdk._convert import request_from_proto, result_to_proto
from sdk._proto import reward_pb2 as pb

from .dispatch import Dispatcher
from .wire import WireFormatError, length_delimited_fields

__all__ = ["SERVICE_NAME", "RewardService"]

log = logging.getLogger("arbiter.service")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RewardService"].full_name
M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request message that protobuf could not parse."""

    reason: str
    request_id: str = ""  # salvaged from the wire when that field itself is sound

    def response(self) -> pb.ScoreResponse:
        failure = ScoreResult.failure(Status.INVALID_INPUT, self.reason)
        return pb.ScoreResponse(request_id=self.request_id, result=result_to_proto(failure))


_DECODE_ERRORS = (DecodeError, ValueError, UnicodeDecodeError)


def _lenient(message_type: type[M]) -> Callable[[bytes], M | Undecodable]:
    def deserialize(data: bytes) -> M | Undecodable:
        try:
            return message_type.FromString(data)
        except _DECODE_ERRORS as exc:
            return Undecodable(f"not a valid {message_type.DESCRIPTOR.full_name}: {exc}")

    return deserialize


def _lenient_request(data: bytes) -> pb.ScoreRequest | Undecodable:
    """A ScoreRequest, or why not, with its request_id when that much is readable."""
    try:
        return pb.ScoreRequest.FromString(data)
    except _DECODE_ERRORS as exc:
        request_id = ""
        with contextlib.suppress(WireFormatError, UnicodeDecodeError):
            ids = length_delimited_fields(data, _REQUEST_ID_FIELD)
            request_id = ids[-1].decode("utf-8") if ids else ""
        return Undecodable(f"not a valid {pb.ScoreRequest.DESCRIPTOR.full_name}: {exc}", request_id)


def _lenient_batch(data: bytes) -> list[pb.ScoreRequest | Undecodable] | Undecodable:
    """The batch's requests, each parsed on its own when the batch as a whole is not
    parseable, so one bad sample costs one result."""
    try:
        return list(pb.ScoreBatchRequest.FromString(data).requests)
    except _DECODE_ERRORS as exc:
        try:
            return [_lenient_request(raw) for raw in length_delimited_fields(data, _BATCH_REQUESTS_FIELD)]
        except WireFormatError:
            return Undecodable(f"not a valid {pb.ScoreBatchRequest.DESCRIPTOR.full_name}: {exc}")


_REQUEST_ID_FIELD = pb.ScoreRequest.DESCRIPTOR.fields_by_name["request_id"].number
_BATCH_REQUESTS_FIELD = pb.ScoreBatchRequest.DESCRIPTOR.fields_by_name["requests"].number


class RewardService:
    def __init__(
        self, dispatcher: Dispatcher, *, max_sample_bytes: int, max_batch_size: int, max_stream_inflight: int
    ) -> None:
        self.dispatcher = dispatcher
        self.max_sample_bytes = max_sample_bytes
        self.max_batch_size = max_batch_size
        self.max_stream_inflight = max_stream_inflight

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's method handlers, with the lenient deserialisers."""
        handlers = {
            "Score": grpc.unary_unary_rpc_method_handler(
                self.Score,
                request_deserializer=_lenient(pb.ScoreRequest),
                response_serializer=pb.ScoreResponse.SerializeToString,
            ),
            "ScoreBatch": grpc.unary_unary_rpc_method_handler(
                self.ScoreBatch,
                request_deserializer=_lenient_batch,
                response_serializer=pb.ScoreBatchResponse.SerializeToString,
            ),
            "StreamScore": grpc.stream_stream_rpc_method_handler(
                self.StreamScore,
                request_deserializer=_lenient_request,
                response_serializer=pb.ScoreResponse.SerializeToString,
            ),
            "ListScorers": grpc.unary_unary_rpc_method_handler(
                self.ListScorers,
                request_deserializer=_lenient(pb.ListScorersRequest),
                response_serializer=pb.ListScorersResponse.SerializeToString,
            ),
        }
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    async def Score(
        self, request: pb.ScoreRequest | Undecodable, context: grpc.aio.ServicerContext
    ) -> pb.ScoreResponse:
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        assert isinstance(request, pb.ScoreRequest)
        return await self._score_one(request, _deadline(context))

    async def ScoreBatch(
        self,
        requests: list[pb.ScoreRequest | Undecodable] | Undecodable,
        context: grpc.aio.ServicerContext,
    ) -> pb.ScoreBatchResponse:
        if isinstance(requests, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, requests.reason)
        assert isinstance(requests, list)
        if len(requests) > self.max_batch_size:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"batch of {len(requests)} samples exceeds max_batch_size={self.max_batch_size};"
                " split it (the client does this with batch_chunk_size)",
            )
        responses = await self.score_many(requests, _deadline(context))
        return pb.ScoreBatchResponse(responses=responses)

    async def StreamScore(
        self,
        requests: AsyncIterator[pb.ScoreRequest | Undecodable],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ScoreResponse]:
        deadline = _deadline(context)
        done: asyncio.Queue[pb.ScoreResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self.max_stream_inflight)
        tasks: set[asyncio.Task[None]] = set()

        async def score(request: pb.ScoreRequest | Undecodable) -> None:
            await done.put(await self._score_any(request, deadline))

        async def read() -> None:
            try:
                async for request in requests:
                    # Back-pressure: a slot is freed only once its response has been sent,
                    # so a client that sends without reading cannot pile up results here.
                    await slots.acquire()
                    task = asyncio.create_task(score(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*list(tasks))
            finally:
                await done.put(None)

        reader = asyncio.create_task(read())
        try:
            while (response := await done.get()) is not None:
                yield response
                slots.release()
            await reader
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()

    async def ListScorers(
        self,
        request: pb.ListScorersRequest | Undecodable,
        context: grpc.aio.ServicerContext,
    ) -> pb.ListScorersResponse:
        infos = []
        for name, served in sorted(self.dispatcher.scorers.items()):
            scorer = served.entry.scorer
            infos.append(
                pb.ScorerInfo(
                    name=name,
                    type=scorer.name,
                    description=served.description,
                    params_schema_json=json.dumps(scorer.Params.model_json_schema()),
                    default_params_json=json.dumps(dict(served.entry.defaults)),
                    cpu_bound=scorer.cpu_bound,
                )
            )
        return pb.ListScorersResponse(scorers=infos)

    async def score_many(
        self, requests: Sequence[pb.ScoreRequest | Undecodable], deadline: float | None
    ) -> list[pb.ScoreResponse]:
        """Score requests concurrently, each answered on its own, in order: what
        ``ScoreBatch`` does, for callers in this process that do not speak gRPC."""
        return list(await asyncio.gather(*(self._score_any(r, deadline) for r in requests)))

    async def _score_any(
        self, request: pb.ScoreRequest | Undecodable, deadline: float | None
    ) -> pb.ScoreResponse:
        if isinstance(request, Undecodable):
            return request.response()
        return await self._score_one(request, deadline)

    async def _score_one(self, request: pb.ScoreRequest, deadline: float | None) -> pb.ScoreResponse:
        try:
            return await self._score_one_unguarded(request, deadline)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must cost this sample, never its batch or stream
            log.exception("failed to answer a sample of scorer %s", request.scorer)
            failure = ScoreResult.failure(Status.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
            return pb.ScoreResponse(request_id=request.request_id, result=result_to_proto(failure))

    async def _score_one_unguarded(
        self, request: pb.ScoreRequest, deadline: float | None
    ) -> pb.ScoreResponse:
        scorer = request.scorer
        size = request.sample.ByteSize()
        if size > self.max_sample_bytes:
            result = ScoreResult.failure(
                Status.INVALID_INPUT,
                f"sample is {size} bytes; this server accepts at most"
                f" {self.max_sample_bytes} (max_sample_bytes)",
                scorer=scorer,
            )
        elif not scorer:
            result = ScoreResult.failure(Status.INVALID_INPUT, "request names no scorer")
        else:
            try:
                sample, params = request_from_proto(request)
            except (ValueError, TypeError) as exc:
                result = ScoreResult.failure(Status.INVALID_INPUT, f"malformed sample: {exc}", scorer=scorer)
            else:
                result = await self.dispatcher.score_request(scorer, sample, params, deadline=deadline)
        return pb.ScoreResponse(request_id=request.request_id, result=result_to_proto(result))


def _deadline(context: Any) -> float | None:
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return float(asyncio.get_running_loop().time() + remaining)
