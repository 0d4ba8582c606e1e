"""The Docker backend: the same ``run``/``program`` interface, each execution in a
fresh container of a per-language image, for hosts that have a Docker engine.

Each container: no network, a read-only root filesystem with a small private
``/tmp``, the run's directory bound at ``/work``, uid/gid 65534, no new
privileges, all capabilities dropped, and pid, memory, CPU-time and file-size
limits from ``Limits``; wall time is enforced from outside (the container is
killed). Standard streams are files in ``/work`` wired up by ``/bin/sh`` (so the
file-size limit caps output), so an image needs a shell and the language's tools.
The Docker SDK is synchronous, so each execution runs on a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from ._engine import Execution, IsolationError, Verdict, _verdict
from ._languages import LANGUAGES, Language
from ._limits import Limits

__all__ = ["DEFAULT_IMAGES", "DockerSandbox"]

DEFAULT_IMAGES: Mapping[str, str] = {
    "python": "python:3.11-slim",
    "c": "gcc:13",
    "cpp": "gcc:13",
    "javascript": "node:20-slim",
}
_STDIN, _STDOUT, _STDERR = ".arbiter-stdin", ".arbiter-stdout", ".arbiter-stderr"


class DockerSandbox:
    """Runs programs in containers; ``IsolationError`` when no engine answers."""

    def __init__(self, images: Mapping[str, str] | None = None, *, client: Any = None) -> None:
        self._owns_client = client is None
        if client is None:
            _check_unix_socket()
        try:
            import docker

            # A fixed API version: "auto" would query the engine here and leak its socket on failure.
            self._client = client or docker.from_env(version="1.41")
        except Exception as exc:
            raise IsolationError(f"no Docker engine answers: {exc}") from exc
        try:
            self._client.ping()
        except Exception as exc:
            if self._owns_client:
                self._client.close()
            raise IsolationError(f"no Docker engine answers: {exc}") from exc
        self.images = dict(DEFAULT_IMAGES if images is None else images)
        self.root = Path(tempfile.mkdtemp(prefix="arbiter-docker-"))

    async def run(
        self,
        language: str | Language,
        source: str,
        *,
        stdin: bytes | str = b"",
        limits: Limits | None = None,
        files: dict[str, bytes] | None = None,
    ) -> Execution:
        async with self.program(language, source, files=files) as program:
            return await program.run(stdin, limits)

    @contextlib.asynccontextmanager
    async def program(
        self, language: str | Language, source: str, *, files: dict[str, bytes] | None = None
    ) -> AsyncIterator[DockerProgram]:
        lang = LANGUAGES[language] if isinstance(language, str) else language
        workdir = Path(tempfile.mkdtemp(prefix="run-", dir=self.root))
        workdir.chmod(0o777)  # written by uid 65534 inside the container
        try:
            (workdir / lang.source_file).write_text(source)
            for name, content in (files or {}).items():
                if "/" in name or name.startswith("."):
                    raise ValueError(f"file name {name!r} must be a plain name")
                (workdir / name).write_bytes(content)
            program = DockerProgram(self, lang, workdir)
            if lang.name not in self.images:
                program.failure = _failure(f"no image configured for {lang.name}")
            elif lang.compile is not None:
                compile_limits = Limits(wall_s=60, cpu_s=60, memory_bytes=1 << 30, max_processes=64)
                built = await program.execute(lang.compile, b"", compile_limits)
                if built.verdict is not Verdict.OK:
                    verdict = (
                        Verdict.SANDBOX_ERROR
                        if built.verdict is Verdict.SANDBOX_ERROR
                        else Verdict.COMPILE_ERROR
                    )
                    program.failure = Execution(
                        verdict,
                        built.exit_code,
                        built.signal,
                        b"",
                        built.stderr,
                        built.wall_s,
                        built.cpu_s,
                        "compilation failed",
                    )
            yield program
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        if self._owns_client:
            self._client.close()


class DockerProgram:
    def __init__(self, sandbox: DockerSandbox, language: Language, workdir: Path) -> None:
        self._sandbox = sandbox
        self.language = language
        self._workdir = workdir
        self.failure: Execution | None = None

    async def run(self, stdin: bytes | str = b"", limits: Limits | None = None) -> Execution:
        if self.failure is not None:
            return self.failure
        data = stdin.encode() if isinstance(stdin, str) else stdin
        return await self.execute(self.language.run, data, limits or Limits())

    async def execute(self, argv: tuple[str, ...], stdin: bytes, limits: Limits) -> Execution:
        (self._workdir / _STDIN).write_bytes(stdin)
        return await asyncio.to_thread(self._execute, argv, limits)

    def _execute(self, argv: tuple[str, ...], limits: Limits) -> Execution:
        from docker.errors import DockerException
        from docker.types import Ulimit

        command = [
            a.replace("{dir}", "/work").replace("{memory_mb}", str(limits.memory_bytes >> 20)) for a in argv
        ]
        image = self._sandbox.images[self.language.name]
        output_limit = max(limits.file_size_bytes, limits.output_bytes)
        started = time.perf_counter()
        container = None
        try:
            container = self._sandbox._client.containers.create(
                image,
                # Streams go to files (not the engine's log), so the file-size limit caps them.
                [
                    "/bin/sh",
                    "-c",
                    f'exec "$0" "$@" < /work/{_STDIN} > /work/{_STDOUT} 2> /work/{_STDERR}',
                    *command,
                ],
                working_dir="/work",
                user="65534:65534",
                network_disabled=True,
                network_mode="none",
                read_only=True,
                tmpfs={"/tmp": "size=16m,mode=1777"},
                volumes={str(self._workdir): {"bind": "/work", "mode": "rw"}},
                mem_limit=limits.memory_bytes,
                memswap_limit=limits.memory_bytes,
                pids_limit=limits.max_processes,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                ulimits=[
                    Ulimit(name="cpu", soft=limits.cpu_s, hard=limits.cpu_s),
                    Ulimit(name="fsize", soft=output_limit, hard=output_limit),
                    Ulimit(name="nofile", soft=limits.open_files, hard=limits.open_files),
                ],
                environment={"HOME": "/work", "LANG": "C.UTF-8"},
            )
            container.start()
            timed_out = False
            try:
                status = container.wait(timeout=limits.wall_s)
            except Exception:  # the engine's wait timed out
                timed_out = True
                with contextlib.suppress(DockerException):
                    container.kill()
                status = container.wait(timeout=30)
            wall = time.perf_counter() - started
            container.reload()
            state = container.attrs
            stdout = _read_capped(self._workdir / _STDOUT, limits.output_bytes + 1)
            stderr = _read_capped(self._workdir / _STDERR, limits.output_bytes + 1)
        except DockerException as exc:
            return _failure(f"docker: {exc}")
        finally:
            if container is not None:
                with contextlib.suppress(DockerException):
                    container.remove(force=True)
        code = int(status.get("StatusCode", -1))
        oom = bool(state.get("State", {}).get("OOMKilled"))
        report: dict[str, Any] = {
            "exit_code": code if code < 128 else None,
            "signal": code - 128 if code >= 128 else None,
        }
        if oom:
            stderr += b"\nMemoryError: the container ran out of memory"
        return _verdict(report, b"", stdout, stderr, wall, timed_out, limits)


def _check_unix_socket() -> None:
    """Fail fast, and without the Docker library (which leaks a socket when the
    engine is absent), when the engine's local socket does not answer."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return
    path = host[len("unix://") :]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(path)
        except OSError as exc:
            raise IsolationError(f"no Docker engine answers at {host}: {exc}") from exc


def _read_capped(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(limit)
    except FileNotFoundError:
        return b""


def _failure(detail: str) -> Execution:
    return Execution(Verdict.SANDBOX_ERROR, None, None, b"", b"", 0.0, 0.0, detail)
