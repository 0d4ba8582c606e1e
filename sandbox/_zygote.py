"""The fast path for Python: a warm interpreter that forks a fresh child per run.

Starting ``python3`` costs tens of milliseconds per program; forking an interpreter
that has already started, imported the common standard library and warmed the
compiler costs well under one. The zygote is a separate process (the system
interpreter, run as root, standard library only), started by the engine; nothing
is ever forked from the server itself.

Protocol: one JSON request per line on stdin; one JSON report per line on stdout
(each well under the pipe's atomic-write size, so concurrent runs never interleave).
For each request the zygote forks a *supervisor*, which enters new namespaces,
forks the program's process (PID 1 of its PID namespace), enforces the wall time
from outside with a pidfd, and reports. The program's process isolates itself
exactly like the launcher (``_launch._isolate``) and then runs the source with
``exec`` in the already-warm interpreter: no new interpreter, no imports to repeat.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import select
import signal
import sys
import time
import traceback
from typing import Any

# The same isolation code as the slow path, loaded on its own: importing the
# ``sandbox`` package would pull asyncio and friends into every fork.
_spec = importlib.util.spec_from_file_location(
    "_arbiter_launch", os.path.join(os.path.dirname(os.path.abspath(__file__)), "_launch.py")
)
assert _spec is not None and _spec.loader is not None
_launch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_launch)

# Imported once here so that children start with them loaded (a fresh child would
# otherwise read them from disk as the unprivileged user, on every run).
PRELOADED = (
    "bisect",
    "collections",
    "copy",
    "dataclasses",
    "decimal",
    "fractions",
    "functools",
    "heapq",
    "itertools",
    "math",
    "operator",
    "random",
    "re",
    "statistics",
    "string",
    "typing",
)
for _name in PRELOADED:
    importlib.import_module(_name)
compile("x = [i * i for i in range(10)]\nprint(sum(x))\n", "<warm>", "exec")  # warm the compiler


def _run_program(config: dict[str, Any]) -> None:
    """In the program's process (PID 1 of its namespace); never returns."""
    try:
        _launch.isolate(config)
        with open(os.path.join(config["workdir"], config["source"]), encoding="utf-8") as handle:
            source = handle.read()
        code = compile(source, config["source"], "exec")
    except BaseException as exc:
        try:
            os.write(2, f"arbiter-sandbox: cannot start the program: {exc}\n".encode())
        finally:
            os._exit(125)
    sys.argv = [config["source"]]
    # The program's own streams, open for the rest of this process's short life.
    sys.stdin = open(0, closefd=False, encoding="utf-8", errors="replace")  # noqa: SIM115
    sys.stdout = open(1, "w", closefd=False, encoding="utf-8")  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False, encoding="utf-8")  # noqa: SIM115
    status = 0
    try:
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        status = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        status = status or 1
    os._exit(status & 0xFF)


def _supervise(config: dict[str, Any]) -> dict[str, Any]:
    """In the supervisor: isolate, start the program, bound its wall time, report."""
    report: dict[str, Any] = {"id": config["id"]}
    try:
        _launch.enter_namespaces(config["isolate"])
    except OSError as exc:
        report["launch_error"] = str(exc)
        return report
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        _run_program(config)
    pidfd = os.pidfd_open(pid)
    ready, _, _ = select.select([pidfd], [], [], config["wall_s"])
    if not ready:
        os.kill(pid, signal.SIGKILL)
        report["timed_out"] = True
    _, status, usage = os.wait4(pid, 0)
    os.close(pidfd)
    report["wall_s"] = time.perf_counter() - started
    report["exit_code"] = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    report["signal"] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    report["cpu_s"] = usage.ru_utime + usage.ru_stime
    return report


def main() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped automatically
    out = sys.stdout.fileno()
    for line in sys.stdin:
        config = json.loads(line)
        if os.fork() == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                report = _supervise(config)
            except BaseException as exc:
                report = {"id": config["id"], "launch_error": f"supervisor failed: {exc}"}
            os.write(out, (json.dumps(report) + "\n").encode())
            os._exit(0)


if __name__ == "__main__":
    main()
