"""Languages as small declarations: file name, optional compile step, run step.

``{dir}`` in an argument is the run's working directory. Adding a language is a
few lines; one whose toolchain is missing is reported as unavailable.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

__all__ = ["LANGUAGES", "Language"]


@dataclass(frozen=True)
class Language:
    name: str
    source_file: str
    run: tuple[str, ...]
    compile: tuple[str, ...] | None = None
    # V8 reserves far more address space than it uses, so an RLIMIT_AS kills it at
    # start; node gets its heap capped with {memory_mb} instead.
    limit_address_space: bool = True

    @property
    def available(self) -> bool:
        tools = [self.run[0]] + ([self.compile[0]] if self.compile else [])
        return all(shutil.which(tool) for tool in tools if not tool.startswith("{dir}"))

    def resolved(self) -> Language:
        """The same language with its tools as absolute paths (exec needs them)."""

        def absolute(argv: tuple[str, ...]) -> tuple[str, ...]:
            head = argv[0] if argv[0].startswith("{dir}") else shutil.which(argv[0]) or argv[0]
            return (head, *argv[1:])

        return Language(
            self.name,
            self.source_file,
            absolute(self.run),
            absolute(self.compile) if self.compile else None,
            self.limit_address_space,
        )


# Python runs on the system interpreter with isolated mode (-I: no user site, no
# PYTHON* variables, no script directory on sys.path) and -S (no site imports).
# The system interpreter is used because the sandbox user must be able to read it.
LANGUAGES: dict[str, Language] = {
    lang.name: lang
    for lang in (
        Language("python", "main.py", ("/usr/bin/python3", "-I", "-S", "{dir}/main.py")),
        Language("c", "main.c", ("{dir}/main",), ("gcc", "-O2", "-o", "{dir}/main", "{dir}/main.c", "-lm")),
        Language("cpp", "main.cpp", ("{dir}/main",), ("g++", "-O2", "-o", "{dir}/main", "{dir}/main.cpp")),
        Language(
            "javascript",
            "main.js",
            ("node", "--max-old-space-size={memory_mb}", "{dir}/main.js"),
            limit_address_space=False,
        ),
    )
}
