"""The sandbox engine with real processes: languages, verdicts, and hostile
programs that must end in their verdict within their limits, leaving nothing
behind."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import DEFAULT_UIDS, LANGUAGES, Limits, Sandbox, Verdict
from sandbox._uids import UidLeases
from tests.processes import sandbox_processes

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="full isolation needs root (namespaces, uid drop)")

QUICK = Limits(wall_s=3, cpu_s=2, memory_bytes=256 * 1024 * 1024, output_bytes=64 * 1024)


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    # under a directory the unprivileged sandbox user can traverse (pytest's tmp is 0700)
    root = Path(tempfile.mkdtemp(prefix="arbiter-test-", dir="/var/tmp"))
    os.chmod(root, 0o711)
    box = Sandbox(root)
    try:
        yield box
    finally:
        box.close()
        shutil.rmtree(root, ignore_errors=True)


_LOOP = asyncio.Runner()  # one loop for the module, as a server has: one warm interpreter


def run(box: Sandbox, language: str, source: str, stdin: str = "", limits: Limits = QUICK):  # type: ignore[no-untyped-def]
    return _LOOP.run(box.run(language, source, stdin=stdin, limits=limits))


def test_isolation_is_complete_here(box: Sandbox) -> None:
    assert box.report.full, box.report.weaker


ECHO = {
    "python": "print(input()[::-1])",
    "c": '#include <stdio.h>\n#include <string.h>\nint main(){char b[64];scanf("%63s",b);'
    "for(int i=strlen(b)-1;i>=0;i--)putchar(b[i]);putchar(10);}",
    "cpp": "#include <iostream>\n#include <algorithm>\nint main(){std::string s;std::cin>>s;"
    "std::reverse(s.begin(),s.end());std::cout<<s<<std::endl;}",
    "javascript": 'console.log(require("fs").readFileSync(0,"utf8").trim().split("").reverse().join(""))',
}


@pytest.mark.parametrize("language", [name for name in ECHO if LANGUAGES[name].available])
def test_languages_read_stdin_and_write_stdout(box: Sandbox, language: str) -> None:
    execution = run(box, language, ECHO[language], stdin="abc\n")
    assert execution.verdict is Verdict.OK, execution.stderr
    assert execution.stdout == b"cba\n"


def test_compile_error(box: Sandbox) -> None:
    execution = run(box, "c", "int main( { return 0; }")
    assert execution.verdict is Verdict.COMPILE_ERROR and b"error" in execution.stderr


def test_runtime_error_and_exit_codes_are_reported_not_trusted(box: Sandbox) -> None:
    raised = run(box, "python", "raise SystemExit(3)")
    assert (raised.verdict, raised.exit_code) == (Verdict.RUNTIME_ERROR, 3)
    faked = run(box, "python", "import os\nos._exit(0)\nprint('never')")
    assert faked.verdict is Verdict.OK and faked.stdout == b""  # the engine reports; scorers judge


HOSTILE = {
    "infinite-loop": ("while True: pass", Verdict.TIME_LIMIT),
    "sleep-forever": ("import time\ntime.sleep(3600)", Verdict.TIME_LIMIT),
    "memory-bomb": ("x = []\nwhile True: x.append(bytearray(10**7))", Verdict.MEMORY_LIMIT),
    "output-flood": ("import sys\nwhile True: sys.stdout.write('x' * 65536)", Verdict.OUTPUT_LIMIT),
    "fork-bomb": (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        Verdict.TIME_LIMIT,
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_programs_end_in_their_verdict_within_limits(box: Sandbox, name: str) -> None:
    source, verdict = HOSTILE[name]
    started = time.perf_counter()
    execution = run(box, "python", source)
    assert execution.verdict is verdict, (execution.verdict, execution.detail, execution.stderr[-300:])
    assert time.perf_counter() - started < QUICK.wall_s + 3


def test_daemons_do_not_outlive_their_run(box: Sandbox) -> None:
    daemon = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(300)\n"
        "print('parent done')\n"
    )
    before = sandbox_processes()
    execution = run(box, "python", daemon)
    assert execution.verdict is Verdict.OK
    time.sleep(0.2)
    assert sandbox_processes() == before


IDENTITY = (
    "import os, time\n"
    "time.sleep(0.3)\n"  # overlap with the other runs
    "print(os.getuid(), os.getpid(), sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
)


def test_concurrent_programs_run_as_different_uids_and_see_only_their_own_processes(box: Sandbox) -> None:
    async def three() -> list[str]:
        runs = await asyncio.gather(*(box.run("python", IDENTITY, limits=QUICK) for _ in range(3)))
        return [execution.stdout.decode() for execution in runs]

    outputs = [line.strip().split(maxsplit=2) for line in _LOOP.run(three())]
    uids = {int(uid) for uid, _, _ in outputs}
    assert len(uids) == 3 and uids <= set(DEFAULT_UIDS), outputs
    for _, pid, visible in outputs:
        assert pid == "1" and visible == "[1]"  # PID 1 of its own namespace; no other process in /proc


def test_uids_are_leased_host_wide_across_sandboxes_and_processes(box: Sandbox) -> None:
    """A second Sandbox in this process and a lease held by another process: no
    program may get a uid that is in use elsewhere on the host."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from sandbox._uids import UidLeases; from sandbox import DEFAULT_UIDS\n"
            "leases = UidLeases(DEFAULT_UIDS); print(leases.lease(), flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    other = Sandbox(box.root)
    try:
        assert holder.stdout is not None
        held_elsewhere = int(holder.stdout.readline())

        async def both() -> list[str]:
            runs = await asyncio.gather(
                *(sandbox.run("python", IDENTITY, limits=QUICK) for sandbox in (box, other, box, other))
            )
            return [execution.stdout.decode() for execution in runs]

        uids = [int(line.split()[0]) for line in _LOOP.run(both())]
        assert len(set(uids)) == 4 and held_elsewhere not in uids, (uids, held_elsewhere)
    finally:
        other.close()
        holder.communicate("", timeout=10)  # its process exits: the kernel drops its lease
    again = UidLeases(DEFAULT_UIDS)
    leased = [again.lease() for _ in range(5)]  # the lowest free uids, now with the holder's
    for uid in leased:
        again.release(uid)
    assert held_elsewhere in leased


def test_many_concurrent_runs_all_start(box: Sandbox) -> None:
    """Past the program's open-files limit in concurrent runs: what the zygote holds
    for other runs (their pidfds and namespaces) must not count against a program."""
    source = "import time\ntime.sleep(0.2)\nprint('ran')\n"

    async def many() -> list[bytes]:
        runs = await asyncio.gather(*(box.run("python", source, limits=QUICK) for _ in range(150)))
        return [execution.stdout + execution.stderr for execution in runs]

    outputs = _LOOP.run(many())
    assert outputs == [b"ran\n"] * 150, {o for o in outputs if o != b"ran\n"}


def test_a_fork_bomb_does_not_starve_a_concurrent_program(box: Sandbox) -> None:
    """RLIMIT_NPROC counts processes per uid: each program has its own uid, so one
    program exhausting its limit leaves the others theirs."""
    bomb = (
        "import os, time\nwhile True:\n    try:\n        os.fork()\n"
        "    except OSError:\n        time.sleep(0.01)\n"
    )
    forker = (
        "import os, time\ntime.sleep(0.5)\n"  # the bomb has exhausted its processes by now
        "pids = []\nfor _ in range(8):\n    pid = os.fork()\n    if pid == 0:\n        os._exit(0)\n"
        "    pids.append(pid)\n"
        "for pid in pids:\n    os.waitpid(pid, 0)\nprint('forked 8')\n"
    )

    async def both() -> tuple[Verdict, bytes]:
        bombed, forked = await asyncio.gather(
            box.run("python", bomb, limits=Limits(wall_s=2, cpu_s=2, max_processes=32)),
            box.run("python", forker, limits=Limits(wall_s=5, cpu_s=2, max_processes=32)),
        )
        return bombed.verdict, forked.stdout + forked.stderr

    verdict, stdout = _LOOP.run(both())
    assert verdict is Verdict.TIME_LIMIT
    assert stdout == b"forked 8\n"


def test_no_network_not_even_the_servers_own_port(box: Sandbox) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        source = (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
        )
        execution = run(box, "python", source)
    assert execution.verdict is Verdict.RUNTIME_ERROR
    assert b"connected" not in execution.stdout


def test_writes_outside_the_working_directory_fail_or_vanish(box: Sandbox, tmp_path: Path) -> None:
    probe = tmp_path / "written-by-sandbox"
    source = (
        "import os\n"
        "results = []\n"
        f"for path in ['/etc/arbiter-owned', '/root/arbiter-owned', {str(probe)!r}, '/tmp/arbiter-escape']:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        results.append('wrote ' + path)\n"
        "    except OSError as exc:\n"
        "        results.append('refused ' + path)\n"
        "open('inside.txt', 'w').write('ok')\n"
        "print(results)\n"
    )
    execution = run(box, "python", source)
    assert execution.verdict is Verdict.OK, execution.stderr
    out = execution.stdout.decode()
    assert "refused /etc/arbiter-owned" in out and "refused /root/arbiter-owned" in out
    assert f"refused {probe}" in out
    assert not Path("/tmp/arbiter-escape").exists()  # /tmp was a private tmpfs
    assert not probe.exists()


def test_environment_is_scrubbed(box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBITER_TOKEN", "server-secret")
    execution = run(box, "python", "import os\nprint(sorted(os.environ))")
    assert b"ARBITER_TOKEN" not in execution.stdout
    assert execution.stdout.strip() == b"['HOME', 'LANG', 'PATH']"


def test_runs_leave_no_files_behind(box: Sandbox) -> None:
    run(box, "python", "import os\nos.mkdir('sub')\nopen('sub/big.bin', 'wb').write(b'x' * 1000)")
    leftovers = [path for path in box.root.rglob("*") if not path.is_dir()]
    assert leftovers == []  # only empty directories stay, kept for reuse


def test_strict_mode_refuses_an_unisolated_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    from sandbox import IsolationError

    with pytest.raises(IsolationError, match="not root"):
        Sandbox(tmp_path)
    weaker = Sandbox(tmp_path, strict=False)
    assert not weaker.report.full and "not root" in weaker.report.weaker[0]


def test_an_unreachable_root_is_refused_with_the_reason(tmp_path: Path) -> None:
    from sandbox import IsolationError

    with pytest.raises(IsolationError, match="not searchable by others"):
        Sandbox(tmp_path / "inner")
