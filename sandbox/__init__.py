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
from ._engine import DEFAULT_UIDS, Execution, IsolationError, IsolationReport, Program, Sandbox, Verdict
from ._languages import LANGUAGES, Language
from ._limits import Limits

__all__ = [
    "DEFAULT_IMAGES",
    "DEFAULT_UIDS",
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

_default: tuple[Sandbox, asyncio.Runner] | None = None


def run(language: str, source: str, *, stdin: bytes | str = b"", limits: Limits | None = None) -> Execution:
    """Run one program in a process-wide default (strict) sandbox; blocking. Calls
    share one event loop, and with it one warm interpreter."""
    global _default
    if _default is None:
        _default = (Sandbox(), asyncio.Runner())
    box, runner = _default
    return runner.run(box.run(language, source, stdin=stdin, limits=limits))
