"""SandboxFusion's ``POST /run_code``, run in Arbiter's sandbox.

The request and response follow SandboxFusion's models (``RunCodeRequest``,
``RunCodeResponse``, ``CommandRunResult``), so the ``sandbox-fusion`` client
(``run_code``, ``set_endpoint``) and verl's sandbox-fusion reward path work
against this server unchanged.

Mapping of the sandbox's verdicts to SandboxFusion's statuses:

================  ==========================================================
verdict           answer
================  ==========================================================
OK                ``Success``; run ``Finished``, return code 0
RUNTIME_ERROR     ``Failed``; run ``Finished``, the exit code (or -signal)
MEMORY_LIMIT      ``Failed``; run ``Finished``, non-zero return code
OUTPUT_LIMIT      ``Failed``; run ``Finished``, non-zero return code
TIME_LIMIT        ``Failed``; run ``TimeLimitExceeded``
COMPILE_ERROR     ``Failed``; compile ``Finished`` with the compiler's return
                  code and stderr (``TimeLimitExceeded`` past
                  compile_timeout), no run
SANDBOX_ERROR     ``SandboxError`` with the reason
================  ==========================================================

Languages: ``python``, ``cpp``, ``c``, ``nodejs`` (also ``javascript``). Any other
of SandboxFusion's languages is answered ``SandboxError`` naming the ones served.
``run_timeout`` and ``compile_timeout`` are honoured up to ``[http]
run_code_max_timeout_s``; ``memory_limit_MB`` up to ``run_code_memory_mb``.
Compilation runs under the sandbox's own compile limits (30 s); one that takes
longer than ``compile_timeout`` is reported ``TimeLimitExceeded`` and not run.
``files`` (base64, plain file names) are written beside the program;
``fetch_files`` is not supported (the run's directory is gone when it ends).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import logging
import math
import time

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sandbox import Execution, IsolationError, Limits, Sandbox, Verdict

from ..config import HttpSection
from ._common import read_json

__all__ = ["RunCodeHandler", "RunCodeRequest", "RunCodeResponse"]

log = logging.getLogger("arbiter.http.run_code")

LANGUAGES = {"python": "python", "cpp": "cpp", "c": "c", "nodejs": "javascript", "javascript": "javascript"}


class RunCodeRequest(BaseModel):
    """SandboxFusion's request model (unknown fields are ignored, as there)."""

    model_config = ConfigDict(extra="ignore")

    compile_timeout: float = Field(10, gt=0)
    run_timeout: float = Field(10, gt=0)
    memory_limit_MB: int = -1
    code: str
    stdin: str | None = None
    language: str
    files: dict[str, str | None] = Field(default_factory=dict)
    fetch_files: list[str] = Field(default_factory=list)


class CommandRunStatus(enum.StrEnum):
    Finished = "Finished"
    Error = "Error"
    TimeLimitExceeded = "TimeLimitExceeded"


class CommandRunResult(BaseModel):
    status: CommandRunStatus
    execution_time: float | None = None
    return_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None


class RunStatus(enum.StrEnum):
    Success = "Success"
    Failed = "Failed"
    SandboxError = "SandboxError"


class RunCodeResponse(BaseModel):
    status: RunStatus
    message: str
    compile_result: CommandRunResult | None = None
    run_result: CommandRunResult | None = None
    executor_pod_name: str | None = None
    files: dict[str, str] = Field(default_factory=dict)


def _json(response: RunCodeResponse, status: int = 200) -> web.Response:
    return web.json_response(response.model_dump(mode="json"), status=status)


def sandbox_error(message: str) -> RunCodeResponse:
    return RunCodeResponse(status=RunStatus.SandboxError, message=message)


def _text(data: bytes) -> str:
    return data.decode(errors="replace")


def _return_code(execution: Execution) -> int | None:
    """As Python's subprocess reports it: the exit code, or -signal."""
    if execution.signal is not None:
        return -int(execution.signal)
    return execution.exit_code


def run_result(execution: Execution) -> CommandRunResult:
    if execution.verdict is Verdict.TIME_LIMIT:
        return CommandRunResult(
            status=CommandRunStatus.TimeLimitExceeded,
            execution_time=execution.wall_s,
            stdout=_text(execution.stdout),
            stderr=_text(execution.stderr),
        )
    code = _return_code(execution)
    stderr = _text(execution.stderr)
    if execution.verdict is not Verdict.OK:
        if not code:  # a limit hit without a failing exit status still failed
            code = 1
        if execution.verdict in (Verdict.MEMORY_LIMIT, Verdict.OUTPUT_LIMIT) and execution.detail:
            stderr = f"{stderr}\n[arbiter] {execution.detail}".lstrip("\n")
    return CommandRunResult(
        status=CommandRunStatus.Finished,
        execution_time=execution.wall_s,
        return_code=code,
        stdout=_text(execution.stdout),
        stderr=stderr,
    )


class RunCodeHandler:
    def __init__(self, config: HttpSection, *, max_sample_bytes: int) -> None:
        self.config = config
        self.max_sample_bytes = max_sample_bytes
        self._sandbox: Sandbox | IsolationError | None = None
        self._slots = asyncio.Semaphore(config.run_code_max_concurrency)

    async def start(self) -> None:
        """Probe isolation once, at start-up; a host that cannot isolate answers
        every run with SandboxError saying why, and the rest of the server serves."""
        strict = not self.config.run_code_allow_weaker_isolation
        try:
            self._sandbox = await asyncio.to_thread(Sandbox, strict=strict)
        except IsolationError as exc:
            log.warning("/run_code refuses to run code: %s", exc)
            self._sandbox = exc

    def close(self) -> None:
        if isinstance(self._sandbox, Sandbox):
            self._sandbox.close()
        self._sandbox = None

    async def run_code(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        try:
            run = RunCodeRequest.model_validate(body)
        except ValidationError as exc:
            # FastAPI (SandboxFusion's server) answers an invalid body with 422 and the problems.
            return web.json_response(
                {
                    "detail": exc.errors(include_url=False, include_context=False),
                    "error": {"code": "INVALID_ARGUMENT", "message": str(exc)},
                },
                status=422,
            )
        return _json(await self.execute(run))

    async def execute(self, run: RunCodeRequest) -> RunCodeResponse:
        language = LANGUAGES.get(run.language)
        if language is None:
            served = ", ".join(sorted(LANGUAGES))
            return sandbox_error(
                f"language {run.language!r} is not supported by this server; it runs {served}"
            )
        if run.fetch_files:
            return sandbox_error("fetch_files is not supported by this server")
        try:
            size = len(run.code.encode()) + len((run.stdin or "").encode())
        except UnicodeEncodeError as exc:  # JSON can carry lone surrogates; a program cannot
            return sandbox_error(f"code or stdin is not valid Unicode text: {exc}")
        if size > self.max_sample_bytes:
            return sandbox_error(
                f"code and stdin are {size} bytes; this server accepts at most"
                f" {self.max_sample_bytes} (max_sample_bytes)"
            )
        try:
            files = _decode_files(run.files)
        except ValueError as exc:
            return sandbox_error(str(exc))
        sandbox = self._sandbox
        if not isinstance(sandbox, Sandbox):
            return sandbox_error(f"no sandbox: {sandbox or 'not started'}")
        cap = self.config.run_code_max_timeout_s
        run_s = min(run.run_timeout, cap)
        compile_s = min(run.compile_timeout, cap)
        memory_mb = self.config.run_code_memory_mb
        if run.memory_limit_MB > 0:
            memory_mb = min(run.memory_limit_MB, memory_mb)
        limits = Limits(wall_s=run_s, cpu_s=max(1, math.ceil(run_s)), memory_bytes=memory_mb << 20)
        async with self._slots:
            try:
                return await self._run(sandbox, language, run, files, limits, compile_s)
            except (IsolationError, OSError, ValueError) as exc:
                log.warning("/run_code: sandbox failed: %s", exc)
                return sandbox_error(f"sandbox failed: {type(exc).__name__}: {exc}")

    async def _run(
        self,
        sandbox: Sandbox,
        language: str,
        run: RunCodeRequest,
        files: dict[str, bytes],
        limits: Limits,
        compile_s: float,
    ) -> RunCodeResponse:
        started = time.perf_counter()
        async with sandbox.program(language, run.code, files=files) as program:
            compile_wall = time.perf_counter() - started
            compiled = program.language.compile is not None
            failure = program.failure
            if failure is not None and failure.verdict is Verdict.SANDBOX_ERROR:
                return sandbox_error(failure.detail or _text(failure.stderr) or "the sandbox failed")
            compile_result = None
            if compiled:
                took = failure.wall_s if failure is not None else compile_wall
                if took > compile_s:
                    compile_result = CommandRunResult(
                        status=CommandRunStatus.TimeLimitExceeded,
                        execution_time=took,
                        stderr=_text(failure.stderr) if failure is not None else "",
                    )
                    return RunCodeResponse(status=RunStatus.Failed, message="", compile_result=compile_result)
                if failure is not None:
                    compile_result = CommandRunResult(
                        status=CommandRunStatus.Finished,
                        execution_time=failure.wall_s,
                        return_code=_return_code(failure) or 1,
                        stdout="",
                        stderr=_text(failure.stderr),
                    )
                    return RunCodeResponse(status=RunStatus.Failed, message="", compile_result=compile_result)
                compile_result = CommandRunResult(
                    status=CommandRunStatus.Finished,
                    execution_time=compile_wall,
                    return_code=0,
                    stdout="",
                    stderr="",
                )
            execution = await program.run(run.stdin or "", limits)
        if execution.verdict is Verdict.SANDBOX_ERROR:
            return sandbox_error(execution.detail or "the sandbox failed")
        result = run_result(execution)
        ok = result.status is CommandRunStatus.Finished and result.return_code == 0
        return RunCodeResponse(
            status=RunStatus.Success if ok else RunStatus.Failed,
            message="",
            compile_result=compile_result,
            run_result=result,
        )


def _decode_files(files: dict[str, str | None]) -> dict[str, bytes]:
    decoded: dict[str, bytes] = {}
    for name, content in files.items():
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise ValueError(f"file {name!r}: only plain file names are supported (no directories)")
        try:
            decoded[name] = base64.b64decode(content or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"file {name!r} is not valid base64: {exc}") from exc
    return decoded
