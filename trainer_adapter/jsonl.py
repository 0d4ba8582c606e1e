"""Reading JSONL data files, with errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["read_jsonl_objects"]


def read_jsonl_objects(path: Path, error: type[Exception]) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, blank lines skipped. Anything else, an
    unreadable file or an empty one raises ``error`` (the caller's own error type)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read data {path}: {exc}") from exc
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{path}:{number}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise error(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    if not rows:
        raise error(f"{path}: no rows")
    return rows
