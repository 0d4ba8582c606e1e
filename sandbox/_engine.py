"""Running one program in the sandbox, and what came of it.

Each execution gets a fresh private directory, its own process tree in new
namespaces (see ``_launch``), hard limits, and a verdict decided here, outside the
program: its exit status is reported, never trusted as a claim of success.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._languages import LANGUAGES, Language
from ._limits import Limits

__all__ = ["Execution", "IsolationError", "Program", "Sandbox", "Verdict"]

_LAUNCHER = Path(__file__).resolve().parent / "_launch.py"
_ZYGOTE = Path(__file__).resolve().parent / "_zygote.py"
_SYSTEM_PYTHON = "/usr/bin/python3"
_NOBODY = 65534
_MEMORY_MARKERS = (b"MemoryError", b"std::bad_alloc", b"heap out of memory", b"Cannot allocate memory")


class IsolationError(RuntimeError):
    """The sandbox cannot isolate programs as configured; the message says what is missing."""


class Verdict(enum.StrEnum):
    OK = "OK"
    RUNTIME_ERROR = "RUNTIME_ERROR"
    TIME_LIMIT = "TIME_LIMIT"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    OUTPUT_LIMIT = "OUTPUT_LIMIT"
    COMPILE_ERROR = "COMPILE_ERROR"
    SANDBOX_ERROR = "SANDBOX_ERROR"  # the sandbox failed, not the program


@dataclass(frozen=True)
class Execution:
    verdict: Verdict
    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    wall_s: float
    cpu_s: float
    detail: str = ""


@dataclass(frozen=True)
class IsolationReport:
    """What this host can isolate. ``weaker`` lists what is missing."""

    namespaces: bool
    unprivileged_user: bool
    weaker: tuple[str, ...] = field(default=())

    @property
    def full(self) -> bool:
        return not self.weaker


class Sandbox:
    """Runs programs in isolation. ``strict`` (the default) refuses to start on a
    host where isolation is incomplete; ``strict=False`` runs in a weaker mode and
    says so in ``report``."""

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        strict: bool = True,
        uid: int = _NOBODY,
        fast_python: bool = True,
    ) -> None:
        is_root = os.geteuid() == 0
        default_root = (
            Path("/var/lib/arbiter/sandbox") if is_root else Path(tempfile.gettempdir()) / "arbiter-sandbox"
        )
        self.root = Path(root) if root is not None else default_root
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)
        self.uid = uid if is_root else None
        if self.uid is not None:
            _check_traversable(self.root)
        self.report = self._probe(is_root)
        # Python runs through a warm forking interpreter when it can (see _zygote).
        self.fast_python = fast_python and os.path.exists(_SYSTEM_PYTHON)
        self._zygote: _Zygote | None = None
        self._zygote_lock = threading.Lock()
        self._free_workdirs: list[Path] = []
        self._pool_lock = threading.Lock()
        if strict and not self.report.full:
            raise IsolationError(
                "sandbox isolation is incomplete on this host: "
                + "; ".join(self.report.weaker)
                + " (run as root on Linux, or pass strict=False to accept a weaker sandbox)"
            )

    def _probe_namespaces(self) -> str:
        """Run ``/bin/true`` fully isolated, synchronously; '' when it works."""
        io = self._streams(b"")
        workdir = Path(tempfile.mkdtemp(prefix="run-", dir=self.root))
        try:
            if self.uid is not None:
                os.chown(workdir, self.uid, self.uid)
            config = self._config(("/bin/true",), io, workdir, Limits(wall_s=10), True)
            done = subprocess.run(
                _launcher_argv(config), capture_output=True, timeout=30, env={}, check=False
            )
            report = _report(done.stdout)
            if report.get("exit_code") == 0:
                return ""
            return (
                report.get("launch_error")
                or _read(io.stderr, 500).decode(errors="replace").strip()
                or (done.stderr.decode(errors="replace")[-300:])
            )
        finally:
            io.remove()
            shutil.rmtree(workdir, ignore_errors=True)

    def _probe(self, is_root: bool) -> IsolationReport:
        weaker = []
        self._isolate = {"mount": False, "pid": False, "net": False, "ipc": False}
        if not is_root:
            weaker.append("not root: no namespaces, no unprivileged uid, no hidden scratch directories")
            return IsolationReport(namespaces=False, unprivileged_user=False, weaker=tuple(weaker))
        self._isolate = {"mount": True, "pid": True, "net": True, "ipc": True}
        problem = self._probe_namespaces()
        if problem:
            weaker.append(f"namespaces unavailable ({problem})")
            self._isolate = dict.fromkeys(self._isolate, False)
        return IsolationReport(namespaces=not weaker, unprivileged_user=True, weaker=tuple(weaker))

    async def run(
        self,
        language: str | Language,
        source: str,
        *,
        stdin: bytes | str = b"",
        limits: Limits | None = None,
        files: dict[str, bytes] | None = None,
    ) -> Execution:
        """Compile (if the language needs it) and run ``source`` once."""
        async with self.program(language, source, files=files) as program:
            return await program.run(stdin, limits)

    @contextlib.asynccontextmanager
    async def program(
        self, language: str | Language, source: str, *, files: dict[str, bytes] | None = None
    ) -> AsyncIterator[Program]:
        """A program compiled once and run as often as needed (one run per test case);
        its directory is deleted on exit. Each run starts from the same files."""
        lang = LANGUAGES[language] if isinstance(language, str) else language
        workdir = self._take_workdir()
        try:
            program = Program(self, lang, workdir)
            if lang.available:
                lang = program.language = lang.resolved()
                self._write(workdir, lang.source_file, source.encode())
                for name, content in (files or {}).items():
                    self._write(workdir, name, content)
                if lang.compile is not None:
                    compile_limits = Limits(wall_s=30, cpu_s=30, memory_bytes=1 << 30, max_processes=16)
                    built = await self._execute(lang.compile, b"", compile_limits, workdir)
                    if built.verdict is not Verdict.OK:
                        failed = (
                            Verdict.SANDBOX_ERROR
                            if built.verdict is Verdict.SANDBOX_ERROR
                            else Verdict.COMPILE_ERROR
                        )
                        program.failure = Execution(
                            failed,
                            built.exit_code,
                            built.signal,
                            b"",
                            built.stderr,
                            built.wall_s,
                            built.cpu_s,
                            "compilation failed",
                        )
            else:
                program.failure = Execution(
                    Verdict.SANDBOX_ERROR,
                    None,
                    None,
                    b"",
                    b"",
                    0.0,
                    0.0,
                    f"{lang.name} is not installed here",
                )
            yield program
        finally:
            self._give_back(workdir)

    async def _execute_warm(self, source_file: str, stdin: bytes, limits: Limits, workdir: Path) -> Execution:
        """Run Python source through the zygote: same isolation, no interpreter start."""
        with self._zygote_lock:
            if self._zygote is None or not self._zygote.alive:
                if self._zygote is not None:
                    self._zygote.close()
                self._zygote = _Zygote()
            zygote = self._zygote
        io = self._streams(stdin)
        try:
            if self.uid is not None:
                os.chown(workdir, self.uid, self.uid)
            config = self._config((), io, workdir, limits, True)
            config.update({"source": source_file, "wall_s": limits.wall_s})
            started = time.perf_counter()
            report = await zygote.run(config, limits.wall_s + 10)
            wall = time.perf_counter() - started
            stdout = _read(io.stdout, limits.output_bytes)
            stderr = _read(io.stderr, limits.output_bytes)
            return _verdict(report, b"", stdout, stderr, wall, bool(report.get("timed_out")), limits)
        finally:
            io.remove()

    def close(self) -> None:
        if self._zygote is not None:
            self._zygote.close()
            self._zygote = None
        with self._pool_lock:
            workdirs, self._free_workdirs = self._free_workdirs, []
        for workdir in workdirs:
            shutil.rmtree(workdir, ignore_errors=True)

    def _config(
        self, argv: tuple[str, ...], io: _Streams, workdir: Path, limits: Limits, limit_address_space: bool
    ) -> dict[str, Any]:
        return {
            "argv": [a.replace("{memory_mb}", str(limits.memory_bytes >> 20)) for a in argv],
            "workdir": str(workdir),
            "uid": self.uid,
            "gid": self.uid,
            "isolate": self._isolate,
            "stdin_path": str(io.stdin),
            "stdout_path": str(io.stdout),
            "stderr_path": str(io.stderr),
            "limits": {
                "cpu_s": limits.cpu_s,
                "memory_bytes": limits.memory_bytes if limit_address_space else None,
                "max_processes": limits.max_processes,
                "file_size_bytes": max(limits.file_size_bytes, limits.output_bytes),
                "open_files": limits.open_files,
            },
        }

    def _take_workdir(self) -> Path:
        """An empty working directory: a cleaned one from earlier runs when there is
        one (removing directories costs a millisecond each here, emptying them far
        less), else a new one."""
        with self._pool_lock:
            workdir = self._free_workdirs.pop() if self._free_workdirs else None
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="run-", dir=self.root))
        os.chmod(workdir, 0o700)  # the last program owned it and may have changed this
        return workdir

    def _give_back(self, workdir: Path) -> None:
        try:
            with os.scandir(workdir) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
        except OSError:
            shutil.rmtree(workdir, ignore_errors=True)
            return
        with self._pool_lock:
            if len(self._free_workdirs) < 64:
                self._free_workdirs.append(workdir)
                return
        shutil.rmtree(workdir, ignore_errors=True)

    def _streams(self, stdin: bytes) -> _Streams:
        """Standard-stream files of one run, in a root-only directory: the program
        holds their descriptors, never their paths. Files, not a directory per run:
        removing directories is slow where mount namespaces come and go."""
        io_root = self.root / "io"
        io_root.mkdir(mode=0o700, exist_ok=True)
        return _Streams.create(io_root, stdin)

    def _write(self, workdir: Path, name: str, content: bytes) -> None:
        target = (workdir / name).resolve()
        if target.parent != workdir.resolve():
            raise ValueError(f"file name {name!r} must be a plain name inside the working directory")
        target.write_bytes(content)
        if self.uid is not None:
            os.chown(target, self.uid, self.uid)

    async def _execute(
        self,
        argv: tuple[str, ...],
        stdin: bytes,
        limits: Limits,
        workdir: Path | None,
        limit_address_space: bool = True,
    ) -> Execution:
        io = self._streams(stdin)
        own_workdir = workdir is None
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="run-", dir=self.root))
        try:
            if self.uid is not None:
                os.chown(workdir, self.uid, self.uid)
            config = self._config(argv, io, workdir, limits, limit_address_space)
            started = time.perf_counter()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-S",
                str(_LAUNCHER),
                json.dumps(config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={},
            )
            timed_out = False
            try:
                out, err = await asyncio.wait_for(process.communicate(), limits.wall_s)
            except TimeoutError:
                timed_out = True
                process.send_signal(signal.SIGKILL)  # the program dies with it (parent-death signal)
                out, err = await process.communicate()
            except asyncio.CancelledError:
                process.send_signal(signal.SIGKILL)
                await process.wait()
                raise
            wall = time.perf_counter() - started
            report = _report(out)
            stdout = _read(io.stdout, limits.output_bytes)
            stderr = _read(io.stderr, limits.output_bytes)
            return _verdict(report, err, stdout, stderr, wall, timed_out, limits)
        finally:
            io.remove()
            if own_workdir:
                shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class _Streams:
    stdin: Path
    stdout: Path
    stderr: Path

    @classmethod
    def create(cls, directory: Path, stdin: bytes) -> _Streams:
        stem = directory / uuid.uuid4().hex
        streams = cls(stem.with_suffix(".in"), stem.with_suffix(".out"), stem.with_suffix(".err"))
        streams.stdin.write_bytes(stdin)
        streams.stdout.touch(mode=0o600)
        streams.stderr.touch(mode=0o600)
        return streams

    def remove(self) -> None:
        for path in (self.stdin, self.stdout, self.stderr):
            path.unlink(missing_ok=True)


class Program:
    """A prepared program (see ``Sandbox.program``)."""

    def __init__(self, sandbox: Sandbox, language: Language, workdir: Path) -> None:
        self._sandbox = sandbox
        self.language = language
        self._workdir = workdir
        self.failure: Execution | None = None  # compile error or missing toolchain

    async def run(self, stdin: bytes | str = b"", limits: Limits | None = None) -> Execution:
        if self.failure is not None:
            return self.failure
        data = stdin.encode() if isinstance(stdin, str) else stdin
        if self.language.name == "python" and self._sandbox.fast_python:
            return await self._sandbox._execute_warm(
                self.language.source_file, data, limits or Limits(), self._workdir
            )
        return await self._sandbox._execute(
            self.language.run, data, limits or Limits(), self._workdir, self.language.limit_address_space
        )


class _Zygote:
    """The warm forking interpreter, shared by every event loop and thread.

    Plain ``subprocess`` plus one reader thread (not asyncio), so one zygote serves
    a whole process: each pending run's future is resolved on its own loop.
    """

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [_SYSTEM_PYTHON, "-I", "-S", str(_ZYGOTE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={},
            bufsize=0,
        )
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[dict[str, Any]]]] = {}
        self._next = 0
        self._reader = threading.Thread(target=self._read, name="sandbox-zygote", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None and self._reader.is_alive()

    async def run(self, config: dict[str, Any], limit_s: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        with self._lock:
            self._next += 1
            config["id"] = str(self._next)
            self._pending[config["id"]] = (loop, future)
            try:
                assert self.process.stdin is not None
                self.process.stdin.write((json.dumps(config) + "\n").encode())
            except OSError as exc:
                self._pending.pop(config["id"], None)
                return {"launch_error": f"the warm interpreter is gone: {exc}"}
        try:
            return await asyncio.wait_for(future, limit_s)
        except TimeoutError:
            return {"launch_error": "the warm interpreter did not answer in time"}
        finally:
            with self._lock:
                self._pending.pop(config["id"], None)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            report = _report(line)
            with self._lock:
                waiting = self._pending.get(str(report.get("id")))
            if waiting is not None:
                _resolve(*waiting, report)
        with self._lock:  # the zygote exited: nobody will answer the rest
            orphans = list(self._pending.values())
        for loop, future in orphans:
            _resolve(loop, future, {"launch_error": "the warm interpreter exited"})

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def _resolve(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[dict[str, Any]], report: dict[str, Any]
) -> None:
    def settle() -> None:
        if not future.done():
            future.set_result(report)

    with contextlib.suppress(RuntimeError):  # that loop has closed: its caller is gone
        loop.call_soon_threadsafe(settle)


def _launcher_argv(config: dict[str, Any]) -> list[str]:
    return [sys.executable, "-I", "-S", str(_LAUNCHER), json.dumps(config)]


def _check_traversable(root: Path) -> None:
    """The sandbox user must be able to reach its working directories."""
    for directory in (root.resolve(), *root.resolve().parents):
        if not os.stat(directory).st_mode & 0o001:
            raise IsolationError(
                f"sandbox root {root} is not reachable by the sandbox user: {directory} is not"
                " searchable by others (chmod o+x, or choose another root)"
            )


def _report(out: bytes) -> dict[str, Any]:
    try:
        value = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    return value if isinstance(value, dict) else {}


def _read(path: Path, limit: int) -> bytes:
    with path.open("rb") as handle:
        return handle.read(limit + 1)


def _verdict(
    report: dict[str, Any],
    launcher_err: bytes,
    stdout: bytes,
    stderr: bytes,
    wall: float,
    timed_out: bool,
    limits: Limits,
) -> Execution:
    exit_code, sig, cpu = report.get("exit_code"), report.get("signal"), float(report.get("cpu_s", 0.0))

    def done(verdict: Verdict, detail: str = "") -> Execution:
        return Execution(
            verdict,
            exit_code,
            sig,
            stdout[: limits.output_bytes],
            stderr[: limits.output_bytes],
            wall,
            cpu,
            detail,
        )

    if timed_out:
        return done(Verdict.TIME_LIMIT, f"wall time over {limits.wall_s:g}s")
    if "launch_error" in report or not report:
        detail = report.get("launch_error") or launcher_err.decode(errors="replace")[-500:] or "no report"
        return done(Verdict.SANDBOX_ERROR, f"launcher failed: {detail}")
    if exit_code == 125 and stderr.startswith(b"arbiter-sandbox:"):
        return done(Verdict.SANDBOX_ERROR, stderr.decode(errors="replace").strip())
    if sig in (signal.SIGXCPU, signal.SIGKILL) and cpu >= limits.cpu_s - 0.5:
        return done(Verdict.TIME_LIMIT, f"cpu time over {limits.cpu_s}s")
    if sig == signal.SIGXFSZ or len(stdout) > limits.output_bytes or len(stderr) > limits.output_bytes:
        return done(Verdict.OUTPUT_LIMIT, f"output or file over {limits.output_bytes} bytes")
    if exit_code == 0 and sig is None:
        return done(Verdict.OK)
    if any(marker in stderr for marker in _MEMORY_MARKERS):
        return done(Verdict.MEMORY_LIMIT, f"memory over {limits.memory_bytes} bytes")
    return done(Verdict.RUNTIME_ERROR, f"exit code {exit_code}" if sig is None else f"killed by signal {sig}")
