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
from ._uids import UID_LEASE_DIR, UidLeases, UidsExhausted

__all__ = ["Execution", "IsolationError", "Program", "Sandbox", "Verdict"]

_LAUNCHER = Path(__file__).resolve().parent / "_launch.py"
_ZYGOTE = Path(__file__).resolve().parent / "_zygote.py"
_SYSTEM_PYTHON = "/usr/bin/python3"
# Each program runs as a uid of its own, leased host-wide (see _uids) from this range
# for the program's life: RLIMIT_NPROC (counted per uid) then bounds one program's
# processes only, and concurrent programs cannot signal, trace or read each other. No
# account needs to exist for these uids; keep the range clear of real users and
# subordinate-id ranges.
DEFAULT_UIDS = range(1_200_000_000, 1_200_065_536)
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
        uids: range = DEFAULT_UIDS,
        uid_lease_dir: Path = UID_LEASE_DIR,
        fast_python: bool = True,
    ) -> None:
        is_root = os.geteuid() == 0
        default_root = (
            Path("/var/lib/arbiter/sandbox") if is_root else Path(tempfile.gettempdir()) / "arbiter-sandbox"
        )
        self.root = Path(root) if root is not None else default_root
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)
        self._pool_lock = threading.Lock()
        self._uids = UidLeases(uids, uid_lease_dir) if is_root else None
        if is_root:
            _check_traversable(self.root)
        self._io_root = self.root / "io"
        self._io_root.mkdir(mode=0o700, exist_ok=True)
        self.report = self._probe(is_root)
        # Python runs through a warm forking interpreter when it can (see _zygote).
        self.fast_python = fast_python and os.path.exists(_SYSTEM_PYTHON)
        self._zygotes: dict[asyncio.AbstractEventLoop, _Zygote] = {}
        self._zygote_lock = threading.Lock()
        self._free_workdirs: list[Path] = []
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
        uid = self._lease_uid()
        try:
            if uid is not None:
                os.chown(workdir, uid, uid)
            config = self._config(("/bin/true",), io, workdir, Limits(wall_s=10), True, uid)
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
            self._return_uid(uid)

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
        uid = self._lease_uid()
        try:
            program = Program(self, lang, workdir, uid)
            if lang.available:
                lang = program.language = lang.resolved()
                self._write(workdir, lang.source_file, source.encode(), uid)
                for name, content in (files or {}).items():
                    self._write(workdir, name, content, uid)
                if lang.compile is not None:
                    compile_limits = Limits(wall_s=30, cpu_s=30, memory_bytes=1 << 30, max_processes=16)
                    built = await self._execute(lang.compile, b"", compile_limits, workdir, uid)
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
            self._return_uid(uid)  # every run has ended, and its PID namespace with it

    def _lease_uid(self) -> int | None:
        """A uid no running program on this host has (None when not root: no uid change)."""
        if self._uids is None:
            return None
        try:
            return self._uids.lease()
        except UidsExhausted as exc:
            raise IsolationError(str(exc)) from None

    def _return_uid(self, uid: int | None) -> None:
        if uid is not None and self._uids is not None:
            self._uids.release(uid)

    async def _execute_warm(
        self, source_file: str, stdin: bytes, limits: Limits, workdir: Path, uid: int | None
    ) -> Execution:
        """Run Python source through the zygote: same isolation, no interpreter start."""
        zygote = self._zygote_for(asyncio.get_running_loop())
        io = self._streams(stdin)
        try:
            if uid is not None:
                os.chown(workdir, uid, uid)
            config = self._config((), io, workdir, limits, True, uid)
            config.update({"source": source_file, "wall_s": limits.wall_s})
            started = time.perf_counter()
            report = await zygote.run(config, limits.wall_s + 10)
            wall = time.perf_counter() - started
            stdout = _read(io.stdout, limits.output_bytes)
            stderr = _read(io.stderr, limits.output_bytes)
            return _verdict(report, b"", stdout, stderr, wall, bool(report.get("timed_out")), limits)
        finally:
            io.remove()

    def _zygote_for(self, loop: asyncio.AbstractEventLoop) -> _Zygote:
        """This loop's zygote, started (or restarted) on first use; those of loops
        that have closed since are stopped here."""
        with self._zygote_lock:
            zygote = self._zygotes.get(loop)
            if zygote is not None and zygote.alive:
                return zygote
            stale = [z for other, z in self._zygotes.items() if other.is_closed() or other is loop]
            self._zygotes = {other: z for other, z in self._zygotes.items() if z not in stale}
            self._zygotes[loop] = zygote = _Zygote(self._isolate, loop)
        for old in stale:
            old.close()
        return zygote

    def close(self) -> None:
        with self._zygote_lock:
            zygotes, self._zygotes = list(self._zygotes.values()), {}
        for zygote in zygotes:
            zygote.close()
        with self._pool_lock:
            workdirs, self._free_workdirs = self._free_workdirs, []
        for workdir in workdirs:
            shutil.rmtree(workdir, ignore_errors=True)

    def _config(
        self,
        argv: tuple[str, ...],
        io: _Streams,
        workdir: Path,
        limits: Limits,
        limit_address_space: bool,
        uid: int | None,
    ) -> dict[str, Any]:
        return {
            "argv": [a.replace("{memory_mb}", str(limits.memory_bytes >> 20)) for a in argv],
            "workdir": str(workdir),
            "uid": uid,
            "gid": uid,
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
        return _Streams.create(self._io_root, stdin)

    @staticmethod
    def _write(workdir: Path, name: str, content: bytes, uid: int | None) -> None:
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise ValueError(f"file name {name!r} must be a plain name inside the working directory")
        fd = os.open(workdir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        try:
            _write_all(fd, content)
            if uid is not None:
                os.fchown(fd, uid, uid)
        finally:
            os.close(fd)

    async def _execute(
        self,
        argv: tuple[str, ...],
        stdin: bytes,
        limits: Limits,
        workdir: Path,
        uid: int | None,
        limit_address_space: bool = True,
    ) -> Execution:
        io = self._streams(stdin)
        try:
            if uid is not None:
                os.chown(workdir, uid, uid)
            config = self._config(argv, io, workdir, limits, limit_address_space, uid)
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


@dataclass(frozen=True)
class _Streams:
    stdin: Path
    stdout: Path
    stderr: Path

    @classmethod
    def create(cls, directory: Path, stdin: bytes) -> _Streams:
        stem = f"{directory}/{uuid.uuid4().hex}"
        streams = cls(Path(stem + ".in"), Path(stem + ".out"), Path(stem + ".err"))
        for path, content in ((streams.stdin, stdin), (streams.stdout, b""), (streams.stderr, b"")):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, content)
            finally:
                os.close(fd)
        return streams

    def remove(self) -> None:
        for path in (self.stdin, self.stdout, self.stderr):
            path.unlink(missing_ok=True)


class Program:
    """A prepared program (see ``Sandbox.program``)."""

    def __init__(self, sandbox: Sandbox, language: Language, workdir: Path, uid: int | None) -> None:
        self._sandbox = sandbox
        self.language = language
        self._workdir = workdir
        self._uid = uid
        self.failure: Execution | None = None  # compile error or missing toolchain

    async def run(self, stdin: bytes | str = b"", limits: Limits | None = None) -> Execution:
        if self.failure is not None:
            return self.failure
        data = stdin.encode() if isinstance(stdin, str) else stdin
        if self.language.name == "python" and self._sandbox.fast_python:
            return await self._sandbox._execute_warm(
                self.language.source_file, data, limits or Limits(), self._workdir, self._uid
            )
        return await self._sandbox._execute(
            self.language.run,
            data,
            limits or Limits(),
            self._workdir,
            self._uid,
            self.language.limit_address_space,
        )


class _Zygote:
    """One warm forking interpreter per event loop, read by that loop directly.

    Reports arrive on the loop that asked (``add_reader`` on the zygote's stdout), so
    no thread has to hand them over: at hundreds of runs per second, waiting for the
    GIL to pass between a reader thread and the loop was a large share of each run.
    """

    def __init__(self, isolate: dict[str, bool], loop: asyncio.AbstractEventLoop) -> None:
        self.process = subprocess.Popen(
            [_SYSTEM_PYTHON, "-I", "-S", str(_ZYGOTE), json.dumps(isolate)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={},
            bufsize=0,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._requests = self.process.stdin
        self._reports = self.process.stdout.fileno()
        os.set_blocking(self._reports, False)
        self.loop = loop
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._buffer = b""
        self._next = 0
        self._reading = True
        loop.add_reader(self._reports, self._on_reports)

    @property
    def alive(self) -> bool:
        return self._reading and self.process.poll() is None

    async def run(self, config: dict[str, Any], limit_s: float) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self._next += 1
        config["id"] = str(self._next)
        self._pending[config["id"]] = future
        try:
            try:
                self._requests.write((json.dumps(config) + "\n").encode())
            except OSError as exc:
                return {"launch_error": f"the warm interpreter is gone: {exc}"}
            try:
                return await asyncio.wait_for(future, limit_s)
            except TimeoutError:
                return {"launch_error": "the warm interpreter did not answer in time"}
        finally:
            self._pending.pop(config["id"], None)

    def _on_reports(self) -> None:
        try:
            data = os.read(self._reports, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the zygote exited: nobody will answer the rest
            self._stop_reading()
            for future in self._pending.values():
                if not future.done():
                    future.set_result({"launch_error": "the warm interpreter exited"})
            return
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            report = _report(line)
            waiting = self._pending.get(str(report.get("id")))
            if waiting is not None and not waiting.done():
                waiting.set_result(report)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self.loop.remove_reader(self._reports)

    def close(self) -> None:
        """Stop the zygote (its running programs die with it). From the zygote's
        own loop, or from anywhere once that loop has stopped or closed."""
        if not self.loop.is_closed() and not self.loop.is_running():
            self._stop_reading()
        elif self.loop.is_running():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._stop_reading)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
