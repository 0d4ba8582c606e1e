"""The Docker backend, where a Docker engine answers (skipped with the reason
otherwise). Images are built from this host's own Python (no registry needed)."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import DockerSandbox, IsolationError, Limits, Verdict

IMAGE = "arbiter-sandbox-python:test-2"  # bump when the image changes: it is cached by tag
QUICK = Limits(wall_s=5, cpu_s=3, memory_bytes=128 * 1024 * 1024, output_bytes=64 * 1024, max_processes=32)


def _engine() -> DockerSandbox | str:
    try:
        return DockerSandbox({"python": IMAGE})
    except IsolationError as exc:
        return str(exc)


def _host_python_image(box: DockerSandbox) -> None:
    """A minimal image: the host's /usr/bin/python3.11, /bin/sh, and the libraries they
    and the standard library's extension modules (ctypes needs libffi) load."""
    try:
        box._client.images.get(IMAGE)
        return
    except Exception:
        pass
    files = ["/usr/bin/python3.11", "/bin/dash"]
    extensions = [str(path) for path in Path("/usr/lib/python3.11/lib-dynload").glob("*.so")]
    linked = subprocess.run(["ldd", *files, *extensions], capture_output=True, text=True, check=False)
    libraries = linked.stdout
    files += sorted({word for word in libraries.split() if word.startswith("/") and os.path.exists(word)})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in files:
            archive.add(os.path.realpath(path), arcname=path.lstrip("/"))
        archive.add("/usr/lib/python3.11", arcname="usr/lib/python3.11")
        for name, target in (("usr/bin/python3", "python3.11"), ("bin/sh", "dash")):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            archive.addfile(link)
        for directory in ("work", "tmp"):
            entry = tarfile.TarInfo(directory)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o1777
            archive.addfile(entry)
    repository, tag = IMAGE.split(":")
    box._client.api.import_image_from_data(buffer.getvalue(), repository=repository, tag=tag)


@pytest.fixture(scope="module")
def box() -> Iterator[DockerSandbox]:
    engine = _engine()
    if isinstance(engine, str):
        pytest.skip(f"Docker backend not tested: {engine}")
    if not shutil.which("ldd") or not os.path.exists("/usr/bin/python3.11"):
        pytest.skip("Docker backend not tested: no host Python 3.11 to build the test image from")
    _host_python_image(engine)
    yield engine
    engine.close()


def run(box: DockerSandbox, source: str, stdin: str = ""):  # type: ignore[no-untyped-def]
    return asyncio.run(box.run("python", source, stdin=stdin, limits=QUICK))


def test_runs_with_stdin_and_stdout(box: DockerSandbox) -> None:
    execution = run(box, "print(input()[::-1])", "abc\n")
    assert execution.verdict is Verdict.OK and execution.stdout == b"cba\n", execution


@pytest.mark.parametrize(
    "source, verdict",
    [
        pytest.param("raise SystemExit(3)", Verdict.RUNTIME_ERROR, id="runtime-error"),
        pytest.param("import time\ntime.sleep(60)", Verdict.TIME_LIMIT, id="sleep-forever"),
        pytest.param("x = bytearray(1024 ** 3)", Verdict.MEMORY_LIMIT, id="memory-bomb"),
        pytest.param(
            "import sys\nwhile True: sys.stdout.write('x' * 65536)", Verdict.OUTPUT_LIMIT, id="flood"
        ),
    ],
)
def test_verdicts(box: DockerSandbox, source: str, verdict: Verdict) -> None:
    started = time.perf_counter()
    execution = run(box, source)
    assert execution.verdict is verdict, (execution.verdict, execution.detail, execution.stderr[-200:])
    assert time.perf_counter() - started < QUICK.wall_s + 20


def test_no_network_no_writes_outside_work_unprivileged(box: DockerSandbox) -> None:
    source = (
        "import os, socket\n"
        "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2); print('net open')\n"
        "except OSError:\n    print('net blocked')\n"
        "try:\n    open('/etc/owned', 'w'); print('wrote /etc')\n"
        "except OSError:\n    print('root read-only')\n"
        "open('/work/ok.txt', 'w').write('fine')\n"
        "print(os.getuid())\n"
    )
    execution = run(box, source)
    assert execution.stdout.decode().split() == ["net", "blocked", "root", "read-only", "65534"], execution


def test_same_interface_as_the_process_sandbox(box: DockerSandbox) -> None:
    async def many() -> list[bytes]:
        async with box.program("python", "print(int(input()) * 2)") as program:
            return [(await program.run(str(n), QUICK)).stdout for n in (1, 2, 3)]

    assert asyncio.run(many()) == [b"2\n", b"4\n", b"6\n"]


def test_no_engine_is_a_clear_error() -> None:
    class NoEngine:
        def ping(self) -> None:
            raise ConnectionError("connection refused")

    with pytest.raises(IsolationError, match="no Docker engine answers"):
        DockerSandbox(client=NoEngine())


def test_leaves_no_files(box: DockerSandbox) -> None:
    run(box, "open('/work/junk', 'w').write('x')")
    assert [p for p in Path(box.root).rglob("*") if p.is_file()] == []


def test_code_scorer_on_the_docker_backend(box: DockerSandbox) -> None:
    from reward_server.scorers.code import CodeScorer
    from sdk import Status
    from sdk.testing import LocalRunner

    runner = LocalRunner()
    runner.add("docker_code", CodeScorer, {"backend": "docker", "docker_images": {"python": IMAGE}})
    tests = {"assert_program": "assert add(2, 3) == 5\n"}
    good = runner.score("docker_code", "def add(a, b):\n    return a + b\n", tests=tests)
    assert (good.status, good.reward) == (Status.OK, 1.0), good
    hack = runner.score("docker_code", "import sys\ndef add(a, b): return 0\nsys.exit(0)\n", tests=tests)
    assert hack.reward == 0.0
    calls = {"call_cases": {"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]}}
    assert runner.score("docker_code", "def add(a, b):\n    return a + b\n", tests=calls).reward == 1.0
    humaneval = {
        "assert_program": "def check(candidate):\n    assert abs(candidate(0.5, 0.25) - 0.75) < 1e-9\n",
        "options": {"entry_point": "add"},
    }
    assert runner.score("docker_code", "def add(a, b):\n    return a + b\n", tests=humaneval).reward == 1.0
    assert runner.score("docker_code", "def add(a, b):\n    return a - b\n", tests=humaneval).reward == 0.0
