"""Cross-cutting concerns, once for every method: bearer-token auth, and metrics
plus structured access logs. Handlers stay free of both."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from .metrics import Metrics

__all__ = ["AuthInterceptor", "ObservabilityInterceptor"]

log = logging.getLogger("arbiter.access")

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]

# Health checks stay open so load balancers and grpc_health_probe work without the token.
_OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


def _rewrap(handler: grpc.RpcMethodHandler, wrap: Callable[[Any, bool], Any]) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour wrapped (``wrap(behaviour, streams_out)``)."""
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(
            wrap(handler.stream_stream, True), handler.request_deserializer, handler.response_serializer
        )
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(
            wrap(handler.stream_unary, False), handler.request_deserializer, handler.response_serializer
        )
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            wrap(handler.unary_stream, True), handler.request_deserializer, handler.response_serializer
        )
    return grpc.unary_unary_rpc_method_handler(
        wrap(handler.unary_unary, False), handler.request_deserializer, handler.response_serializer
    )


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types
    """Requires ``authorization: Bearer <token>``; compares in constant time."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("an auth token must not be empty")
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in _OPEN_METHODS:
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        presented = metadata.get("authorization", "")
        presented_bytes = presented.encode() if isinstance(presented, str) else bytes(presented)
        if hmac.compare_digest(presented_bytes, self._expected):
            return handler
        reason = "missing bearer token" if not presented else "invalid bearer token"

        def deny(_behaviour: Any, streams_out: bool) -> Any:
            if streams_out:

                async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
                    yield  # pragma: no cover - abort raises

                return deny_stream

            async def deny_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

            return deny_unary

        return _rewrap(handler, deny)


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts calls by method and status code, times them, and logs each at DEBUG."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        metrics = self._metrics

        def finish(started: float, context: Any, error: BaseException | None) -> None:
            elapsed = time.perf_counter() - started
            code = _code_name(context, error)
            metrics.rpcs.labels(method, code).inc()
            metrics.rpc_seconds.labels(method).observe(elapsed)
            metrics.rpcs_in_flight.dec()
            log.debug("rpc", extra={"method": method, "code": code, "ms": round(elapsed * 1000, 3)})

        def observe(behaviour: Any, streams_out: bool) -> Any:
            if streams_out:

                async def observed_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                    started, error = time.perf_counter(), None
                    metrics.rpcs_in_flight.inc()
                    try:
                        async for item in behaviour(request, context):
                            yield item
                    except BaseException as exc:
                        error = exc
                        raise
                    finally:
                        finish(started, context, error)

                return observed_stream

            async def observed(request: Any, context: Any) -> Any:
                started, error = time.perf_counter(), None
                metrics.rpcs_in_flight.inc()
                try:
                    return await behaviour(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    finish(started, context, error)

            return observed

        return _rewrap(handler, observe)


def _code_name(context: Any, error: BaseException | None) -> str:
    code = None
    try:
        code = context.code()
    except Exception:
        code = None
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int) and code != 0:
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))
    if error is None:
        return "OK"
    return (
        "CANCELLED"
        if isinstance(error, BaseException) and type(error).__name__ == "CancelledError"
        else "UNKNOWN"
    )
