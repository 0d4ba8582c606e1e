"""The launcher: the only code that runs between the engine and an untrusted program.

Started as its own process (``python -I -S -m sandbox._launch CONFIG_JSON``), as
root, by the engine. It

1. detaches into new mount, PID, network, IPC and UTS namespaces;
2. forks the program's process, which is PID 1 of the new PID namespace, so that
   everything the program starts dies with it (no daemon outlives a run);
3. in that process: makes mounts private, hides the machine's writable scratch
   places (``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock``) behind fresh tmpfs
   mounts (the run's working directory lives elsewhere), sets rlimits, drops
   to an unprivileged uid/gid with no supplementary groups, asks to be killed if
   the launcher dies, clears the environment and execs the program;
4. waits, then writes one JSON line with the exit status and resource use.

It imports nothing beyond the standard library and keeps no state.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def enter_namespaces(isolate: dict[str, bool]) -> None:
    """Detach the calling process into the namespaces asked for (its next child is
    PID 1 of the new PID namespace)."""
    flags = 0
    if isolate["mount"]:
        flags |= CLONE_NEWNS
    if isolate["pid"]:
        flags |= CLONE_NEWPID
    if isolate["net"]:
        flags |= CLONE_NEWNET
    if isolate["ipc"]:
        flags |= CLONE_NEWIPC | CLONE_NEWUTS
    if flags:
        _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    """Join the namespace that ``fd`` refers to (for a PID namespace: our next child's)."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def make_mounts_private() -> None:
    """In a new mount namespace: stop mount events propagating to or from the host."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def isolate(config: dict[str, Any], *, mounts_private: bool = False) -> None:
    """In the program's own process: private scratch mounts, rlimits, standard
    streams, an unprivileged uid, no new privileges, death with the parent, and the
    working directory. Raises if any step fails (the caller must not run the program).
    ``mounts_private``: the mount tree this namespace was copied from is private already."""
    if config["isolate"]["mount"]:
        if not mounts_private:
            make_mounts_private()
        for path in SCRATCH:
            if os.path.isdir(path) and not config["workdir"].startswith(path + "/"):
                _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=1777")
        if config["isolate"]["pid"]:  # a /proc that shows this run's processes only
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    stdin = os.open(config["stdin_path"], os.O_RDONLY)
    stdout = os.open(config["stdout_path"], os.O_WRONLY)
    stderr = os.open(config["stderr_path"], os.O_WRONLY)
    for source, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(source, target)
        os.close(source)
    os.closerange(3, 65536)  # nothing of the engine's reaches the program
    # Limits only now: the process inherits descriptors (other runs' pidfds and
    # namespaces, in the zygote) that would count against RLIMIT_NOFILE until closed.
    limits = config["limits"]
    for name, value in (
        ("RLIMIT_CPU", limits["cpu_s"]),
        ("RLIMIT_AS", limits["memory_bytes"]),
        ("RLIMIT_NPROC", limits["max_processes"]),
        ("RLIMIT_FSIZE", limits["file_size_bytes"]),
        ("RLIMIT_NOFILE", limits["open_files"]),
        ("RLIMIT_CORE", 0),
    ):
        if value is not None:
            resource.setrlimit(getattr(resource, name), (value, value))
    if config["uid"] is not None:
        os.setgroups([])
        os.setgid(config["gid"])
        os.setuid(config["uid"])
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
    os.chdir(config["workdir"])
    os.environ.clear()
    os.environ.update(_environment(config["workdir"]))


def _environment(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8"}


def _child(config: dict[str, Any]) -> None:
    """In the new namespaces; never returns."""
    try:
        isolate(config)
        argv = [arg.replace("{dir}", config["workdir"]) for arg in config["argv"]]
        os.execve(argv[0], argv, _environment(config["workdir"]))
    except BaseException as exc:  # the program never started: say why, distinctly
        try:
            os.write(2, f"arbiter-sandbox: cannot start the program: {exc}\n".encode())
        finally:
            os._exit(125)


def main() -> None:
    config = json.loads(sys.argv[1])
    report: dict[str, Any] = {}
    try:
        enter_namespaces(config["isolate"])
    except OSError as exc:
        report["launch_error"] = str(exc)
        print(json.dumps(report), flush=True)
        sys.exit(0)
    pid = os.fork()
    if pid == 0:
        _child(config)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
    _, status, usage = os.wait4(pid, 0)
    report["exit_code"] = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    report["signal"] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    report["cpu_s"] = usage.ru_utime + usage.ru_stime
    report["max_rss_kb"] = usage.ru_maxrss
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
