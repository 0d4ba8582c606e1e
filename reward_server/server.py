"""Assembling and running the server: scorers from config and plugins, the worker
pool, gRPC with health and reflection, metrics, auth, TLS and graceful shutdown.

Order matters at start-up: the worker pool's forkserver starts before the gRPC
server, so no process is ever forked from one that runs gRPC threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from sdk import ScorerDefinitionError, ScorerEntry, ScorerRegistry
from sdk._proto import reward_pb2 as pb

from .config import ArbiterConfig, ScorerConfig
from .dispatch import Dispatcher, ServedScorer
from .http import HttpFrontDoor
from .interceptors import AuthInterceptor, ObservabilityInterceptor
from .metrics import Metrics
from .scorers import BUILTIN_SCORERS
from .service import SERVICE_NAME, RewardService
from .workers import WorkerPool

__all__ = ["ArbiterServer", "build_registry", "build_scorers", "host_port", "resolve_token"]

log = logging.getLogger("arbiter.server")

TOKEN_ENV = "ARBITER_TOKEN"


def build_registry(config: ArbiterConfig, extra_plugins: tuple[str, ...] = ()) -> ScorerRegistry:
    """Built-ins, then installed plugin packages, then plugin modules named in config or CLI."""
    registry = ScorerRegistry()
    for scorer in BUILTIN_SCORERS:
        registry.add(scorer, origin="built-in")
    if config.entry_points:
        registry.load_entry_points()
    for module in (*config.plugins, *extra_plugins):
        registry.load_module(module)
    return registry


def build_scorers(config: ArbiterConfig, registry: ScorerRegistry) -> dict[str, ServedScorer]:
    """Named scorers: every type under its own name (unless turned off), then the
    config's named scorers, which may shadow a type name."""
    served: dict[str, ServedScorer] = {}
    if config.builtin_scorers:
        for scorer in registry:
            if not scorer.serve_by_default:
                continue
            served[scorer.name] = _serve(
                scorer.name, config.defaults.model_copy(update={"type": scorer.name}), registry
            )
    for name, scorer_config in config.scorers.items():
        served[name] = _serve(name, scorer_config, registry)
    return served


def _serve(name: str, scorer_config: ScorerConfig, registry: ScorerRegistry) -> ServedScorer:
    scorer = registry.get(scorer_config.type or name)
    try:
        entry = ScorerEntry(name=name, scorer=scorer, defaults=scorer_config.params)
    except ScorerDefinitionError as exc:
        raise ScorerDefinitionError(f"config [scorers.{name}]: {exc}") from exc
    return ServedScorer(
        entry=entry,
        timeout_s=scorer_config.timeout_s,
        max_concurrency=scorer_config.max_concurrency,
        description=scorer_config.description or scorer.description,
    )


def resolve_token(config: ArbiterConfig, explicit: str | None = None) -> str | None:
    """The auth token: explicit, else ARBITER_TOKEN, else the config's token file."""
    if explicit:
        return explicit
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    if config.server.auth_token_file is not None:
        token = config.server.auth_token_file.read_text().strip()
        if not token:
            raise ValueError(f"auth token file {config.server.auth_token_file} is empty")
        return token
    return None


@dataclass
class ArbiterServer:
    """One server instance. ``await start()``, then ``await stop()``; or ``run()``."""

    config: ArbiterConfig
    plugins: tuple[str, ...] = ()
    token: str | None = None
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        self.registry = build_registry(self.config, self.plugins)
        self.scorers = build_scorers(self.config, self.registry)
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.http_port: int | None = None
        self._http: HttpFrontDoor | None = None
        self._server: grpc.aio.Server | None = None
        self._pool: WorkerPool | None = None
        self._service: RewardService | None = None
        self._health = HealthServicer()
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        """Start everything; returns the bound gRPC port."""
        cfg = self.config.server
        cpu_bound = [s.entry.scorer for s in self.scorers.values() if s.entry.scorer.cpu_bound]
        if cpu_bound:
            preload = sorted({type(s).__module__ for s in cpu_bound} | {s.__module__ for s in cpu_bound})
            self._pool = WorkerPool(self.config.workers.resolved_processes(), preload=preload)
            await self._pool.start()
        await self._setup_scorers()
        dispatcher = Dispatcher(self.scorers, self._pool, self.metrics)
        service = RewardService(
            dispatcher,
            max_sample_bytes=cfg.max_sample_bytes,
            max_batch_size=cfg.max_batch_size,
            max_stream_inflight=cfg.max_stream_inflight,
        )
        # Observability outermost, so refused calls are counted (as UNAUTHENTICATED) too.
        interceptors: list[grpc.aio.ServerInterceptor] = [ObservabilityInterceptor(self.metrics)]
        if self.token:
            interceptors.append(AuthInterceptor(self.token))
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", cfg.max_request_bytes),
                ("grpc.max_send_message_length", max(cfg.max_request_bytes, 64 * 1024 * 1024)),
                ("grpc.so_reuseport", 0),
            ],
        )
        self._service = service
        server.add_generic_rpc_handlers((service.handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        address = host_port(cfg.host, cfg.port)
        try:
            if cfg.tls_cert_file is not None and cfg.tls_key_file is not None:
                credentials = grpc.ssl_server_credentials(
                    [(cfg.tls_key_file.read_bytes(), cfg.tls_cert_file.read_bytes())]
                )
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio reports a failed bind as RuntimeError
            port = 0
            bind_error = f": {exc}"
        else:
            bind_error = ""
        if port == 0:
            await self.stop(grace=0)  # the workers and scorers started above
            raise OSError(f"cannot bind {address} (in use, or not an address of this host){bind_error}")
        await server.start()
        self._server, self.port = server, port
        await self._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        if self.config.http.enabled:
            try:  # a bad [http] setting (ConfigError) or a failed bind stops the server
                http = HttpFrontDoor(self.config, service, self.metrics, self.token)
                self.http_port = await http.start()
            except BaseException:
                await self.stop(grace=0)  # gRPC, the workers and the scorers started above
                raise
            self._http = http
        if cfg.metrics_port is not None:
            self.metrics_port = self.metrics.serve(cfg.metrics_host, cfg.metrics_port)
        log.info(
            "serving",
            extra={
                "address": f"{cfg.host}:{port}",
                "tls": cfg.tls_cert_file is not None,
                "auth": bool(self.token),
                "scorers": sorted(self.scorers),
                "workers": self._pool.size if self._pool else 0,
                "metrics_port": self.metrics_port,
                "http_port": self.http_port,
            },
        )
        exposure = _exposure(cfg.host, tls=cfg.tls_cert_file is not None, auth=bool(self.token))
        if exposure:
            log.warning(exposure, extra={"address": f"{cfg.host}:{port}"})
        if self._http is not None:
            exposure = _exposure(self._http.host, tls=cfg.tls_cert_file is not None, auth=bool(self.token))
            if exposure:
                log.warning(f"http: {exposure}", extra={"address": f"{self._http.host}:{self.http_port}"})
        return int(port)

    async def score_requests(
        self, requests: Sequence[pb.ScoreRequest], timeout_s: float | None = None
    ) -> list[pb.ScoreResponse]:
        """Score requests as ``ScoreBatch`` does (same limits, same dispatch, same
        results), for callers in this process that do not speak gRPC: a Ray actor
        answering a Ray-based trainer. Call it on the server's event loop."""
        if self._service is None:
            raise RuntimeError("the server is not started")
        if len(requests) > self.config.server.max_batch_size:
            raise ValueError(
                f"batch of {len(requests)} samples exceeds max_batch_size={self.config.server.max_batch_size}"
            )
        deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
        # The service's own path, so a sample's answer cannot differ from gRPC's.
        return await self._service.score_many(requests, deadline)

    async def _setup_scorers(self) -> None:
        """Run each scorer's optional ``setup`` (load a model, ...) before serving, so
        that a broken configuration fails at start-up rather than on every request."""
        for served in self.scorers.values():
            setup = getattr(served.entry.scorer, "setup", None)
            if callable(setup):
                params = served.entry.params(None)
                try:
                    await asyncio.to_thread(setup, params)
                except Exception as exc:
                    raise ScorerDefinitionError(f"scorer {served.name!r} failed to set up: {exc}") from exc

    def _close_scorers(self) -> None:
        for scorer in {id(s.entry.scorer): s.entry.scorer for s in self.scorers.values()}.values():
            close = getattr(scorer, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    log.exception("scorer %s failed to close", scorer.name)

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking calls, let in-flight ones finish within ``grace`` seconds,
        then stop the workers and the metrics endpoint."""
        grace = self.config.server.grace_period_s if grace is None else grace
        if self._server is not None:
            await self._health.enter_graceful_shutdown()
            http_stopped = self._http.stop(grace) if self._http is not None else asyncio.sleep(0)
            await asyncio.gather(self._server.stop(grace), http_stopped)
            self._server, self._http = None, None
        self._service = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        self._close_scorers()
        self.metrics.close()
        self._stopped.set()
        log.info("stopped")

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully."""
        await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down", extra={"grace_s": self.config.server.grace_period_s})
        await self.stop()


def host_port(host: str, port: int) -> str:
    """``host:port`` as gRPC targets spell it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _exposure(host: str, *, tls: bool, auth: bool) -> str:
    """A warning when the server is reachable beyond this machine without a token
    or without TLS ('' when it is not)."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    missing = [what for what, present in (("a token", auth), ("TLS", tls)) if not present]
    if loopback or not missing:
        return ""
    without = " or ".join(missing)
    return f"serving on {host}, beyond loopback, without {without}: whoever reaches it can use it"
