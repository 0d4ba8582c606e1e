"""The fast path for Python: a warm interpreter that forks a fresh child per run.

Starting ``python3`` costs tens of milliseconds per program; forking an interpreter
that has already started, imported the common standard library and warmed the
compiler costs well under one. The zygote is a separate process (the system
interpreter, run as root, standard library only), started by the engine; nothing
is ever forked from the server itself.

Protocol: one JSON request per line on stdin; one JSON report per line on stdout.

The zygote is a small event loop (``select`` over stdin and one pidfd per running
program), so each run costs exactly one fork:

* PID namespace: before each fork the zygote unshares a new PID namespace for its
  next child and switches back to its own right after, so the program's process
  is PID 1 of a namespace of its own and everything it starts dies with it.
* Network namespace: creating one costs about as much as the rest of a run, and an
  unprivileged program can change nothing in it, so empty ones (loopback down) are
  made once and *leased*: one run at a time per namespace, returned only after the
  run's PID namespace is gone (so no socket of it survives).
* Mount, IPC and UTS namespaces are new for every run (they can hold state: files
  on the private scratch mounts, System V shared memory); the zygote's own mount
  tree is made private once, so a run's mounts never propagate anywhere.
* Wall time is enforced from here: a program past its deadline is killed.

The program's process isolates itself exactly like the launcher's
(``_launch.isolate``) and then runs the source with ``exec`` in the already-warm
interpreter: no new interpreter, no imports to repeat.
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
from dataclasses import dataclass
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


def _run_program(config: dict[str, Any], netns: int | None) -> None:
    """In the program's process (PID 1 of its namespace); never returns."""
    try:
        _launch.enter_namespaces({**config["isolate"], "pid": False, "net": False})
        if netns is not None:
            _launch.setns(netns, _launch.CLONE_NEWNET)
        _launch.isolate(config, mounts_private=True)
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


@dataclass
class _Run:
    id: str
    pid: int
    pidfd: int
    started: float
    deadline: float
    netns: int | None
    timed_out: bool = False


class _Zygote:
    def __init__(self, isolate: dict[str, bool]) -> None:
        self.isolate = isolate
        self.running: dict[int, _Run] = {}  # by pidfd
        self.free_netns: list[int] = []
        self.pending = b""
        self.own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY) if isolate["pid"] else None
        self.host_netns = os.open("/proc/self/ns/net", os.O_RDONLY) if isolate["net"] else None
        if isolate["mount"]:
            # Our own mount tree, private all the way down: what a run mounts in its
            # copy of it can never propagate back to the host.
            _launch.enter_namespaces({"mount": True, "pid": False, "net": False, "ipc": False})
            _launch.make_mounts_private()

    def _lease_netns(self) -> int | None:
        if self.host_netns is None:
            return None
        if self.free_netns:
            return self.free_netns.pop()
        _launch.enter_namespaces({"mount": False, "pid": False, "net": True, "ipc": False})
        try:
            return os.open("/proc/self/ns/net", os.O_RDONLY)
        finally:
            _launch.setns(self.host_netns, _launch.CLONE_NEWNET)

    def start(self, config: dict[str, Any]) -> None:
        netns = self._lease_netns()
        try:
            if self.own_pid_ns is not None:
                _launch.enter_namespaces({"mount": False, "pid": True, "net": False, "ipc": False})
            pid = os.fork()
            if pid == 0:
                _run_program(config, netns)  # never returns
        except BaseException:
            if netns is not None:
                self.free_netns.append(netns)
            raise
        finally:
            if self.own_pid_ns is not None:  # our next child starts in our own namespace again
                _launch.setns(self.own_pid_ns, _launch.CLONE_NEWPID)
        pidfd = os.pidfd_open(pid)
        now = time.monotonic()
        self.running[pidfd] = _Run(config["id"], pid, pidfd, now, now + float(config["wall_s"]), netns)

    def finish(self, run: _Run) -> None:
        _, status, usage = os.wait4(run.pid, 0)
        os.close(run.pidfd)
        del self.running[run.pidfd]
        if run.netns is not None:  # the run's PID namespace is gone: nothing of it is left
            self.free_netns.append(run.netns)
        report = {
            "id": run.id,
            "wall_s": time.monotonic() - run.started,
            "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "timed_out": run.timed_out,
        }
        _write_line(report)

    def handle_requests(self, data: bytes) -> None:
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            config: dict[str, Any] = {}
            try:
                config = json.loads(line)
                self.start(config)
            except Exception as exc:  # one bad request costs one report, never the zygote
                _write_line({"id": config.get("id"), "launch_error": f"cannot start: {exc}"})

    def serve(self) -> None:
        events = select.poll()  # not select(): descriptors past 1024 are normal under load
        events.register(0, select.POLLIN)
        watched = set(self.running)
        while True:
            now = time.monotonic()
            for run in self.running.values():
                if not run.timed_out and now >= run.deadline:
                    run.timed_out = True
                    os.kill(run.pid, signal.SIGKILL)
            waiting = [run.deadline - now for run in self.running.values() if not run.timed_out]
            timeout_ms = max(0, int(min(waiting) * 1000) + 1) if waiting else None
            for fd in set(self.running) - watched:
                events.register(fd, select.POLLIN)
            watched = set(self.running)
            for fd, _ in events.poll(timeout_ms):
                if fd == 0:
                    data = os.read(0, 1 << 16)
                    if not data:  # the engine is gone; its programs die with us (pdeathsig)
                        return
                    self.handle_requests(data)
                elif fd in self.running:
                    events.unregister(fd)
                    watched.discard(fd)
                    self.finish(self.running[fd])


def _write_line(report: dict[str, Any]) -> None:
    data = (json.dumps(report) + "\n").encode()
    while data:
        data = data[os.write(1, data) :]


def main() -> None:
    isolate = json.loads(sys.argv[1])
    _Zygote(isolate).serve()


if __name__ == "__main__":
    main()
