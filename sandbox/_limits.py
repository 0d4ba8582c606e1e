"""Resource limits of one sandboxed execution."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """Hard limits. Wall time is enforced from outside (it also catches sleeping
    code, which CPU time misses); the others are kernel rlimits of the program."""

    wall_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 512 * 1024 * 1024
    max_processes: int = 32
    file_size_bytes: int = 16 * 1024 * 1024
    output_bytes: int = 1024 * 1024
    open_files: int = 64

    def __post_init__(self) -> None:
        for name in ("wall_s", "cpu_s", "memory_bytes", "max_processes", "file_size_bytes", "output_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"limit {name} must be positive")
