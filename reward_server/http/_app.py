"""The aiohttp application, its middleware (errors, auth, metrics) and its life cycle."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import ssl
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..config import ArbiterConfig
from ..metrics import Metrics
from ..service import RewardService
from ._common import OPEN_PATHS, BadRequest, error_response
from ._openrlhf import OpenRlhfHandler
from ._plain import PlainHandler
from ._sandbox_fusion import RunCodeHandler

__all__ = ["HttpFrontDoor"]

log = logging.getLogger("arbiter.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# HTTP statuses as the gRPC code names the RPC metrics already use.
_CODE_NAMES = {
    200: "OK",
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    503: "UNAVAILABLE",
}


def _authorized(header: str, token: str) -> bool:
    """``Bearer <token>``, or HTTP Basic auth whose password is the token (what
    ``http://user:<token>@host/...`` URLs send, for clients such as OpenRLHF and
    verl that take a URL but no headers). Compared in constant time. A header
    that is not UTF-8 text (aiohttp keeps undecodable bytes as surrogates) is refused."""
    try:
        header.encode()
    except UnicodeEncodeError:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.encode(), token.encode())
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.encode(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        password = decoded.partition(":")[2]
        return hmac.compare_digest(password.encode(), token.encode())
    return False


class HttpFrontDoor:
    """The HTTP server beside gRPC. ``await start()`` on the gRPC server's loop,
    then ``await stop(grace)``."""

    def __init__(
        self, config: ArbiterConfig, service: RewardService, metrics: Metrics, token: str | None
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._token = token
        http = config.http
        self.plain = PlainHandler(service, max_batch_size=config.server.max_batch_size)
        self.openrlhf = OpenRlhfHandler(
            service,
            scorer=http.openrlhf_scorer,
            params=http.openrlhf_params,
            labels=http.openrlhf_labels,
            max_batch_size=config.server.max_batch_size,
        )
        self.run_code = RunCodeHandler(http, max_sample_bytes=config.server.max_sample_bytes)
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    @property
    def host(self) -> str:
        return self.config.http.host or self.config.server.host

    def application(self) -> web.Application:
        app = web.Application(
            client_max_size=self.config.server.max_request_bytes,
            middlewares=[self._observe, self._errors, self._auth],
        )
        app.router.add_get("/health", self._health)
        app.router.add_post("/get_reward", self.openrlhf.get_reward)
        app.router.add_post("/v1/score", self.plain.score)
        app.router.add_post("/v1/score_batch", self.plain.score_batch)
        app.router.add_get("/v1/scorers", self.plain.scorers)
        if self.config.http.run_code:
            app.router.add_post("/run_code", self.run_code.run_code)
        return app

    async def start(self) -> int:
        """Bind and serve; returns the bound port. A failure (a port in use, a bad
        certificate) leaves nothing behind: no runner, no sandbox."""
        if self.config.http.run_code:
            await self.run_code.start()
        try:
            port, tls = await self._serve()
        except BaseException:
            await asyncio.to_thread(self.run_code.close)
            raise
        log.info(
            "serving http",
            extra={"address": f"{self.host}:{port}", "tls": tls, "auth": bool(self._token)},
        )
        return port

    async def _serve(self) -> tuple[int, bool]:
        server = self.config.server
        context = None
        if server.tls_cert_file is not None and server.tls_key_file is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(server.tls_cert_file, server.tls_key_file)
        runner = web.AppRunner(
            self.application(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=server.grace_period_s,
            # A client that hangs up cancels its handler, and so its scoring: the
            # dispatcher releases its slot and a worker running it is replaced,
            # rather than scoring for nobody. (A sandboxed program started cold is
            # killed; one in the warm Python interpreter ends at its own time limit.)
            handler_cancellation=True,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.config.http.port, ssl_context=context, reuse_port=False)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        sockets = [s for s in runner.addresses if isinstance(s, tuple)]
        self.port = int(sockets[0][1]) if sockets else self.config.http.port
        return self.port, context is not None

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking requests; in-flight ones get ``grace`` seconds to finish
        (``grace_period_s`` when None), then are cancelled."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            if grace is not None and runner.server is not None:
                # The runner's own shutdown waits its construction-time timeout;
                # this waits ``grace``, through aiohttp's public site and server
                # calls, and leaves cleanup() nothing to wait for.
                for site in list(runner.sites):
                    await site.stop()
                await runner.server.shutdown(grace)
            await runner.cleanup()
        await asyncio.to_thread(self.run_code.close)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "SERVING"})

    @web.middleware
    async def _observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Counts and times requests in the RPC metrics, method ``HTTP <path>``."""
        started = time.perf_counter()
        method = f"HTTP {request.path}" if request.match_info.route.resource is not None else "HTTP (unknown)"
        self.metrics.rpcs_in_flight.inc()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            elapsed = time.perf_counter() - started
            code = _CODE_NAMES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
            self.metrics.rpcs.labels(method, code).inc()
            self.metrics.rpc_seconds.labels(method).observe(elapsed)
            self.metrics.rpcs_in_flight.dec()
            log.debug("http", extra={"method": method, "code": code, "ms": round(elapsed * 1000, 3)})

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every failure as JSON: aiohttp's own (404, 405, 413) and bugs (500)."""
        try:
            return await handler(request)
        except BadRequest as exc:
            return error_response(exc.status, exc.message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = exc.text or exc.reason
            if exc.status == 413:
                message = (
                    f"request body over {self.config.server.max_request_bytes} bytes (max_request_bytes)"
                )
            return error_response(exc.status, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("http handler failed for %s", request.path)
            return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._token is None or request.path in OPEN_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        if _authorized(header, self._token):
            return await handler(request)
        reason = "missing bearer token" if not header else "invalid bearer token"
        response = error_response(401, reason)
        response.headers["WWW-Authenticate"] = 'Bearer realm="arbiter"'
        return response
