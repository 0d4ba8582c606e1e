"""Arbiter on a Ray cluster: each replica is a Ray actor running a real server.

verl and OpenRLHF already run on Ray, so their cluster can host the scorers too::

    import ray
    from reward_server.ray_deploy import start_replicas
    from sdk import RewardClient

    ray.init(address="auto")
    with start_replicas(4, config=load_config("arbiter.toml"), token=token) as replicas:
        client = RewardClient(replicas.targets, token=token)  # round-robin, retries
        ...
        results = replicas.score_batch(items)  # or through Ray, without gRPC

A replica is the same ``ArbiterServer`` that ``arbiter serve`` runs (its own worker
pool and sandbox, the config's limits, token and TLS), started on the node Ray
places it on and bound to that node's IP (or the ``host`` asked for), on a port of
its own. Replicas are spread over nodes (Ray's ``SPREAD`` strategy) and named, so a
trainer elsewhere on the cluster finds them with ``connect_replicas``.

Start-up inside an actor: the actor process already runs Ray's own gRPC threads, so
nothing may be forked from it. Nothing is: the worker pool's forkserver and the
sandbox's zygote are fresh interpreters (fork + exec), and workers are forked from
the forkserver. When an actor dies (``ray.kill``, its node lost), its forkserver,
workers and zygote see their pipes close and exit with it.

Ray is imported lazily: the server installs and runs without it
(``pip install 'arbiter-reward[ray]'`` to use this module).

From the command line, on any node of the cluster::

    python -m reward_server.ray_deploy up --replicas 4 --token-file token.txt
    python -m reward_server.ray_deploy targets     # host:port,host:port,...
    python -m reward_server.ray_deploy down

Errors: ``ReplicaStartError`` (a replica could not start; the others are stopped),
and ``sdk.ServerUnavailableError`` when no replica is left to answer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from sdk import ScoreResult, ServerUnavailableError
from sdk._channel import fill_batch, prepare_batch

from .config import ArbiterConfig, ConfigError, load_config, with_overrides
from .embedded import EmbeddedServer
from .server import TOKEN_ENV, host_port, resolve_token

__all__ = [
    "DEFAULT_DEPLOYMENT",
    "NAMESPACE",
    "ArbiterReplica",
    "ReplicaInfo",
    "ReplicaStartError",
    "Replicas",
    "connect_replicas",
    "start_replicas",
]

NAMESPACE = "arbiter"
DEFAULT_DEPLOYMENT = "arbiter"


class ReplicaStartError(RuntimeError):
    """A replica could not start (bad config, unimportable plugin, port in use, no
    room on the cluster); the message carries the replica's own error."""


@dataclass(frozen=True)
class ReplicaInfo:
    """Where one replica serves."""

    name: str
    target: str  # host:port for RewardClient
    node_ip: str
    node_id: str
    pid: int
    metrics_port: int | None


class ArbiterReplica:
    """The actor: one Arbiter server on this node. Wrapped with ``ray.remote`` by
    ``start_replicas``; runs as a threaded actor, so Ray-native calls from several
    trainer workers are scored concurrently on the server's own event loop."""

    def __init__(
        self,
        name: str,
        config: ArbiterConfig,
        plugins: Sequence[str],
        token: str | None,
        host: str | None,
        port: int,
        metrics: bool,
    ) -> None:
        import ray

        node_ip = ray.util.get_node_ip_address()
        self._server = EmbeddedServer(
            config, plugins=plugins, token=token, metrics=metrics, host=host or node_ip, port=port
        ).start()
        self._max_batch = config.server.max_batch_size
        running = self._server.server
        assert running.port is not None
        self._info = ReplicaInfo(
            name=name,
            target=host_port(host or node_ip, running.port),
            node_ip=node_ip,
            node_id=ray.get_runtime_context().get_node_id(),
            pid=os.getpid(),
            metrics_port=running.metrics_port,
        )

    def info(self) -> ReplicaInfo:
        return self._info

    def score_batch(
        self, items: Sequence[Mapping[str, Any]], timeout: float | None = None
    ) -> list[ScoreResult]:
        """What ``RewardClient.score_batch`` returns for ``items``, without gRPC: the
        same request encoding and checks, then the server's own per-sample path."""
        batch = prepare_batch(items)
        responses = []
        for start in range(0, len(batch.requests), self._max_batch):
            part = batch.requests[start : start + self._max_batch]
            responses.extend(self._server.call(self._server.server.score_requests(part, timeout)))
        return fill_batch(batch, responses)

    def stop(self, grace: float = 5.0) -> None:
        """Finish in-flight calls (within ``grace`` seconds), then stop the server."""
        self._server.stop(grace)


@dataclass
class Replicas:
    """Running replicas: their gRPC ``targets``, their actors, and ``stop``."""

    actors: list[Any]  # ray.actor.ActorHandle, one per replica
    infos: list[ReplicaInfo]
    _dead: set[int] = field(default_factory=set, repr=False)

    @property
    def targets(self) -> list[str]:
        """``host:port`` of each replica, for ``RewardClient(targets)``."""
        return [info.target for info in self.infos]

    @property
    def live(self) -> list[ReplicaInfo]:
        """The replicas not known to have died (Ray-native calls notice deaths)."""
        return [info for i, info in enumerate(self.infos) if i not in self._dead]

    def score_batch(
        self, items: Iterable[Mapping[str, Any]], *, timeout: float | None = None
    ) -> list[ScoreResult]:
        """Score ``items`` through Ray (no gRPC), results in order. The items are
        split over the live replicas; a part whose replica dies is sent again to
        another, so every item is answered exactly once while one replica is left. A
        replica that is only unreachable for now (``ActorUnavailableError``) is skipped
        for this call, not written off."""
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        items = list(items)
        results: list[ScoreResult | None] = [None] * len(items)
        live = [i for i in range(len(self.actors)) if i not in self._dead]
        if not live:
            raise ServerUnavailableError("no Arbiter replica is left", code="UNAVAILABLE")
        size = max(1, -(-len(items) // len(live)))
        pending: dict[Any, tuple[int, int]] = {}  # ref -> (replica, start)
        unreachable: set[int] = set()  # for this call only
        turn = 0

        def send(start: int) -> None:
            nonlocal turn
            live = [i for i in range(len(self.actors)) if i not in self._dead and i not in unreachable]
            if not live:
                raise ServerUnavailableError(
                    "no Arbiter replica answered during the call", code="UNAVAILABLE"
                )
            replica = live[turn % len(live)]
            turn += 1
            part = items[start : start + size]
            pending[self.actors[replica].score_batch.remote(part, timeout)] = (replica, start)

        for start in range(0, len(items), size):
            send(start)
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            replica, start = pending.pop(ready)
            try:
                answers = ray.get(ready)
            except ActorUnavailableError:
                unreachable.add(replica)
                send(start)
                continue
            except RayActorError:
                self._dead.add(replica)
                send(start)
                continue
            results[start : start + len(answers)] = answers
        return [r for r in results if r is not None]

    def stop(self, grace: float = 5.0) -> None:
        """Stop every replica: in-flight calls finish within ``grace`` seconds, then
        the actor is killed. Replicas already dead are skipped."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        stopping = [actor.stop.remote(grace) for actor in self.actors]
        for ref in stopping:
            with contextlib.suppress(RayActorError, GetTimeoutError):  # already dead, or stuck
                ray.get(ref, timeout=grace + 60)
        for actor in self.actors:
            ray.kill(actor)
        self._dead.update(range(len(self.actors)))

    def __enter__(self) -> Replicas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_replicas(
    n: int,
    *,
    config: ArbiterConfig | None = None,
    plugins: Sequence[str] = (),
    token: str | None = None,
    host: str | None = None,
    port: int = 0,
    metrics: bool = True,
    num_cpus: float | None = None,
    deployment: str = DEFAULT_DEPLOYMENT,
    detached: bool = False,
    actor_options: Mapping[str, Any] | None = None,
    start_timeout_s: float = 300.0,
) -> Replicas:
    """Start ``n`` replicas on the Ray cluster this process is connected to
    (``ray.init`` first) and wait until each serves.

    - ``config``: as for ``arbiter serve`` (the embedded default when None). Paths in
      it (TLS certificate and key, plugin files) must exist on every node.
    - ``token``: required from clients; defaults to ``ARBITER_TOKEN`` or the config's
      token file, read here, on the driver, and handed to the replicas.
    - ``host``: the address to bind; None binds each node's own IP.
    - ``port``: 0 (default) gives each replica a free port; a fixed port allows one
      replica per node.
    - ``num_cpus``: CPUs Ray reserves per replica; defaults to the worker pool size (one
      when unset: the pool then sizes itself to its node).
    - ``deployment``: replicas are named ``{deployment}-{i}`` in the ``arbiter``
      namespace, for ``connect_replicas``; ``detached`` keeps them running after
      this driver exits (until ``stop``).
    - ``actor_options``: more Ray actor options (``resources``, ``runtime_env``,
      ``scheduling_strategy``, ``memory``, ...).
    """
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    if n < 1:
        raise ValueError("start at least one replica")
    if not ray.is_initialized():
        raise RuntimeError("connect to a Ray cluster first: ray.init(address=...)")
    config = config or load_config()
    if token is None:
        token = resolve_token(config)
    options: dict[str, Any] = {
        # Ray's reservation: the configured pool size, else one CPU (the pool then sizes
        # itself to the node it lands on).
        "num_cpus": (config.workers.processes or 1) if num_cpus is None else num_cpus,
        "scheduling_strategy": "SPREAD",
        "namespace": NAMESPACE,
        "max_concurrency": 64,  # threaded: concurrent Ray-native calls
        "max_restarts": 0,  # a restarted replica would serve on a new address
    }
    if detached:
        options["lifetime"] = "detached"
    options.update(actor_options or {})
    remote = ray.remote(ArbiterReplica)
    names = [f"{deployment}-{i}" for i in range(n)]
    actors = [
        remote.options(name=name, **options).remote(name, config, tuple(plugins), token, host, port, metrics)
        for name in names
    ]
    replicas = Replicas(actors=actors, infos=[])
    try:
        replicas.infos = list(ray.get([actor.info.remote() for actor in actors], timeout=start_timeout_s))
    except (RayActorError, GetTimeoutError) as exc:
        for actor in actors:
            ray.kill(actor)
        raise ReplicaStartError(f"an Arbiter replica did not start: {exc}") from exc
    return replicas


def connect_replicas(deployment: str = DEFAULT_DEPLOYMENT, *, timeout_s: float = 60.0) -> Replicas:
    """The replicas of ``deployment`` already running on this cluster (started by
    another driver, e.g. ``python -m reward_server.ray_deploy up``)."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    prefix = f"{deployment}-"
    names = sorted(
        (
            entry["name"]
            for entry in ray.util.list_named_actors(all_namespaces=True)
            if entry["namespace"] == NAMESPACE
            and entry["name"].startswith(prefix)
            and entry["name"][len(prefix) :].isdigit()
        ),
        key=lambda name: int(name[len(prefix) :]),
    )
    replicas = Replicas(actors=[], infos=[])
    for name in names:
        try:
            actor = ray.get_actor(name, namespace=NAMESPACE)
            info = ray.get(actor.info.remote(), timeout=timeout_s)
        except (ValueError, RayActorError, GetTimeoutError):
            continue  # gone meanwhile
        replicas.actors.append(actor)
        replicas.infos.append(info)
    if not replicas.actors:
        raise ServerUnavailableError(
            f"no replicas of deployment {deployment!r} on this Ray cluster", code="UNAVAILABLE"
        )
    return replicas


def _connect(address: str) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Arbiter replicas on a Ray cluster: ``up``, ``targets``, ``down``."""


_address = click.option(
    "--address", default="auto", show_default=True, help="Ray cluster to join (ray.init address)."
)
_deployment = click.option("--deployment", default=DEFAULT_DEPLOYMENT, show_default=True)


@main.command()
@_address
@_deployment
@click.option("--replicas", "n", type=int, required=True, help="How many replicas to start.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML or YAML config (paths in it must exist on every node).",
)
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE", help="Plugin module (repeatable).")
@click.option("--host", default=None, help="Address to bind [default: each node's IP].")
@click.option("--port", type=int, default=0, show_default=True, help="gRPC port (0: a free one).")
@click.option("--workers", type=int, default=None, help="Worker processes per replica.")
@click.option("--num-cpus", type=float, default=None, help="CPUs per replica [default: --workers].")
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"Require this bearer token (or set {TOKEN_ENV}).",
)
def up(
    address: str,
    deployment: str,
    n: int,
    config_path: Path | None,
    plugins: tuple[str, ...],
    host: str | None,
    port: int,
    workers: int | None,
    num_cpus: float | None,
    token_file: Path | None,
) -> None:
    """Start detached replicas (they outlive this command) and print their targets."""
    try:
        config = load_config(config_path)
        if token_file is not None:
            config = with_overrides(config, server={"auth_token_file": token_file})
        if workers is not None:
            config = with_overrides(config, workers={"processes": workers})
        _connect(address)
        replicas = start_replicas(
            n,
            config=config,
            plugins=plugins,
            host=host,
            port=port,
            num_cpus=num_cpus,
            deployment=deployment,
            detached=True,
        )
    except (ConfigError, ReplicaStartError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    for info in replicas.infos:
        click.echo(f"{info.name}\t{info.target}\tnode {info.node_ip}")


@main.command()
@_address
@_deployment
def targets(address: str, deployment: str) -> None:
    """Print the running replicas' targets, comma-separated."""
    _connect(address)
    try:
        click.echo(",".join(connect_replicas(deployment).targets))
    except ServerUnavailableError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@_address
@_deployment
@click.option("--grace", type=float, default=30.0, show_default=True, help="Seconds for in-flight calls.")
def down(address: str, deployment: str, grace: float) -> None:
    """Stop the deployment's replicas."""
    _connect(address)
    try:
        replicas = connect_replicas(deployment)
    except ServerUnavailableError as exc:
        raise click.ClickException(str(exc)) from exc
    replicas.stop(grace)
    click.echo(f"stopped {len(replicas.infos)} replicas")


if __name__ == "__main__":
    main()
