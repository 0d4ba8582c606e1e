"""What the sandbox left running: processes of the uids its programs run as."""

from __future__ import annotations

import subprocess

from sandbox import DEFAULT_UIDS


def sandbox_processes() -> list[str]:
    """``"pid uid cmd"`` of every process on the machine that runs as a sandbox uid."""
    listing = subprocess.run(["ps", "-e", "-o", "pid=,uid=,cmd="], capture_output=True, text=True, check=True)
    return [line.strip() for line in listing.stdout.splitlines() if int(line.split()[1]) in DEFAULT_UIDS]
