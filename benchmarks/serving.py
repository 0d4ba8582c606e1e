"""Starting ``arbiter serve`` in its own process for a benchmark, as a trainer would
reach it (a separate process, over loopback)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from sdk import RewardClient


def start_server(*extra: str, limit_s: float = 120) -> tuple[str, subprocess.Popen[bytes]]:
    """Start the server with ``extra`` arguments; returns its target once it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reward_server.cli",
            "serve",
            "--port",
            str(port),
            "--no-metrics",
            "--log-level",
            "WARNING",
            *extra,
        ]
    )
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + limit_s
    with RewardClient(target, timeout=2, max_attempts=1) as client:
        while True:
            try:
                client.list_scorers()
                return target, process
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    sys.exit("the server did not start")
                time.sleep(0.3)
