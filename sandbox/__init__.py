"""Execution of untrusted model-written programs. Knows nothing of gRPC.

``Sandbox().run("python", source, stdin=...)`` compiles (where the language needs
it) and runs a program in its own namespaces with hard limits, and returns an
``Execution`` whose verdict is decided outside the program. ``run`` is the same
for one-off use::

    from sandbox import run
    execution = run("python", "print(input()[::-1])", stdin="abc")
    assert execution.stdout == b"cba\\n"

What is isolated, and what is not, is documented in docs/sandbox.md.
"""

from __future__ import annotations

import asyncio

from ._docker import DEFAULT_IMAGES, DockerSandbox
from ._engine import Execution, IsolationError, IsolationReport, Program, Sandbox, Verdict
from ._languages import LANGUAGES, Language
from ._limits import Limits

__all__ = [
    "DEFAULT_IMAGES",
    "DockerSandbox",
    "LANGUAGES",
    "Execution",
    "IsolationError",
    "IsolationReport",
    "Language",
    "Limits",
    "Program",
    "Sandbox",
    "Verdict",
    "run",
]

_default: Sandbox | None = None


def run(language: str, source: str, *, stdin: bytes | str = b"", limits: Limits | None = None) -> Execution:
    """Run one program in a process-wide default (strict) sandbox; blocking."""
    global _default
    if _default is None:
        _default = Sandbox()
    return asyncio.run(_default.run(language, source, stdin=stdin, limits=limits))
