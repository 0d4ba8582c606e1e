"""Host-wide leases on the sandbox's uids.

Every program runs as a uid no other running program has (so ``RLIMIT_NPROC``,
counted per uid, bounds it alone, and programs cannot signal or read each other).
A counter in one ``Sandbox`` cannot promise that: the code scorer, a SandboxFusion
front door and a second server replica on the same host would each hand out the
same first uid. A lease is therefore an exclusive ``flock`` on a file named after
the uid, in one root-only directory for the whole host: any ``Sandbox``, in this
process or another, skips a uid whose file is locked. The kernel drops a dead
process's locks with its descriptors, so a crash never strands a uid.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

__all__ = ["UID_LEASE_DIR", "UidLeases", "UidsExhausted"]

# tmpfs on most hosts: emptied at boot, when no lease can be alive anyway.
UID_LEASE_DIR = Path("/run/arbiter-sandbox-uids")


class UidsExhausted(RuntimeError):
    """Every uid of the range is leased (by this process or others)."""


class UidLeases:
    def __init__(self, uids: range, directory: Path = UID_LEASE_DIR) -> None:
        self.uids = uids
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # sandboxed programs must not touch the leases
        self._held: dict[int, int] = {}  # uid -> descriptor holding its lock
        self._lock = threading.Lock()

    def lease(self) -> int:
        """The lowest uid of the range that nobody on this host holds. Low uids are
        reused first, so only as many lock files exist as programs ever ran at once."""
        with self._lock:
            for uid in self.uids:
                if uid in self._held:
                    continue
                fd = os.open(self.directory / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                self._held[uid] = fd
                return uid
        raise UidsExhausted(f"all {len(self.uids)} sandbox uids are in use on this host")

    def release(self, uid: int) -> None:
        with self._lock:
            fd = self._held.pop(uid)
        os.close(fd)  # closing the only descriptor drops the lock

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)
