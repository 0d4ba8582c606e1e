"""A real server on a background thread of this process, for tests, benchmarks,
notebooks and ``arbiter score --in-process``.

It is the same ``ArbiterServer`` that ``arbiter serve`` runs (same gRPC stack,
worker pool and limits), bound to an ephemeral loopback port::

    with EmbeddedServer(plugins=["my_scorers"]) as server:
        client = RewardClient(server.target)

``http=True`` starts the HTTP front door as well (``server.http_url``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from .config import ArbiterConfig, load_config, with_overrides
from .server import ArbiterServer, host_port

__all__ = ["EmbeddedServer"]

T = TypeVar("T")


class EmbeddedServer:
    def __init__(
        self,
        config: ArbiterConfig | None = None,
        *,
        plugins: Sequence[str] = (),
        token: str | None = None,
        metrics: bool = False,
        http: bool | Mapping[str, Any] = False,
        **server_overrides: Any,
    ) -> None:
        config = config or load_config()
        overrides: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "metrics_port": 0 if metrics else None}
        overrides.update(server_overrides)
        http_overrides: dict[str, Any] = {}
        if http:  # the HTTP front door too, on an ephemeral loopback port
            http_overrides = {"enabled": True, "host": None, "port": 0}
            http_overrides.update(http if isinstance(http, Mapping) else {})
        self.config = with_overrides(config, server=overrides, http=http_overrides)
        self.server = ArbiterServer(self.config, plugins=tuple(plugins), token=token)
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None

    @property
    def target(self) -> str:
        if self.server.port is None:
            raise RuntimeError("the server is not started")
        return host_port(self.config.server.host, self.server.port)

    @property
    def http_url(self) -> str:
        """``http(s)://host:port`` of the HTTP front door (pass ``http=True``)."""
        if self.server.http_port is None:
            raise RuntimeError("the HTTP front door is off; pass http=True")
        scheme = "https" if self.config.server.tls_cert_file is not None else "http"
        host = self.config.http.host or self.config.server.host
        return f"{scheme}://{host}:{self.server.http_port}"

    @property
    def metrics_url(self) -> str:
        if self.server.metrics_port is None:
            raise RuntimeError("metrics are off; pass metrics=True")
        return f"http://{self.config.server.metrics_host}:{self.server.metrics_port}/metrics"

    def start(self) -> EmbeddedServer:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self.server.start())
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="arbiter-embedded", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join(timeout=5)
            self._loop.close()
            raise failure[0]
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the server's event loop and wait for its result (from
        any other thread)."""
        if self._thread is None:
            coro.close()
            raise RuntimeError("the server is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self, grace: float = 1.0) -> None:
        if self._thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self.server.stop(grace=grace), self._loop)
        future.result(timeout=grace + 60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._loop.close()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
