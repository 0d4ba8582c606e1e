"""Checks on SFT data before any training: ``arbiter data check FILE.jsonl``.

Each finding is an **error** (training would fail or learn the wrong thing: a line
that is not JSON, a row of an unknown shape, roles out of order, an empty reply, a
row whose reply does not fit in ``max_length`` at all) or a **warning** (worth a
look: exact and near duplicates, replies that look cut off, rows longer than
``max_length``). The report also has the length distribution, in tokens when a
tokenizer is given, in characters otherwise.

Exact duplicates compare the raw text with runs of whitespace collapsed ("Is 5 > 3?"
and "Is 5 < 3?" differ). Near duplicates: MinHash signatures over word 3-grams of the normalised text, LSH
banding to find candidate pairs, then the exact Jaccard similarity of each
candidate decides (``near_threshold``, 0.8 by default). Written here (a few lines of
numpy) rather than adding a dependency, since every candidate is verified exactly.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["DataReport", "Finding", "check_data"]

Severity = Literal["error", "warning"]
CHECKS = (
    "json",
    "shape",
    "role_order",
    "empty_response",
    "truncated",
    "too_long",
    "exact_duplicate",
    "near_duplicate",
)
_ROLES = {"system", "user", "assistant", "tool"}
_CUT_OFF_ENDINGS = (",", ":", ";", "(", "[", "{", "-", "=", "+", "\\")
_TAG = re.compile(r"<(/?)([A-Za-z_][\w-]*)>")


@dataclass(frozen=True)
class Finding:
    check: str
    severity: Severity
    line: int  # 1-based line in the file
    message: str


@dataclass
class DataReport:
    path: str
    rows: int
    data_format: str
    length_unit: str  # "tokens" or "characters"
    lengths: list[int]
    findings: list[Finding] = field(default_factory=list)
    duplicate_groups: list[list[int]] = field(default_factory=list)  # lines, exact duplicates
    near_duplicates: list[tuple[int, int, float]] = field(default_factory=list)  # line, line, Jaccard

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def length_stats(self) -> dict[str, float]:
        if not self.lengths:
            return {}
        ordered = sorted(self.lengths)

        def pct(q: float) -> float:
            return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])

        return {
            "min": float(ordered[0]),
            "median": pct(0.5),
            "p95": pct(0.95),
            "max": float(ordered[-1]),
            "mean": sum(ordered) / len(ordered),
        }

    def histogram(self, bins: int = 10) -> list[tuple[int, int, int]]:
        """(low, high, count) with ``low <= length < high`` (the last bin includes its high)."""
        if not self.lengths:
            return []
        low, high = min(self.lengths), max(self.lengths)
        width = max(1, -(-(high - low + 1) // bins))
        counts = [0] * bins
        for value in self.lengths:
            counts[min(bins - 1, (value - low) // width)] += 1
        edges = [(low + i * width, low + (i + 1) * width, c) for i, c in enumerate(counts)]
        return [e for e in edges if e[0] <= high]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rows": self.rows,
            "format": self.data_format,
            "ok": not self.errors,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "length_unit": self.length_unit,
            "length_stats": self.length_stats(),
            "histogram": [{"low": a, "high": b, "count": c} for a, b, c in self.histogram()],
            "findings": [asdict(f) for f in self.findings],
            "duplicate_groups": self.duplicate_groups,
            "near_duplicates": [
                {"lines": [a, b], "jaccard": round(j, 3)} for a, b, j in self.near_duplicates
            ],
        }


def check_data(
    path: Path,
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    data_format: Literal["auto", "messages", "prompt_completion"] = "auto",
    near_threshold: float = 0.8,
) -> DataReport:
    """Read ``path`` (JSONL) and run every check; never raises for bad data, it reports it."""
    findings: list[Finding] = []
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        findings.append(Finding("json", "error", 0, f"cannot read the file: {exc}"))
        lines = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            findings.append(Finding("json", "error", number, f"not JSON: {exc.msg}"))
            continue
        if not isinstance(value, dict):
            findings.append(Finding("json", "error", number, f"a JSON {type(value).__name__}, not an object"))
            continue
        rows.append((number, value))

    fmt = data_format
    if fmt == "auto" and rows:
        first = rows[0][1]
        fmt = "messages" if "messages" in first else "prompt_completion"
    texts: dict[int, str] = {}  # line -> text with whitespace collapsed, for exact duplicates
    valid: list[tuple[int, dict[str, Any]]] = []
    lengths: list[int] = []
    for number, row in rows:
        parts = _row_parts(row, fmt)
        if isinstance(parts, str):
            findings.append(Finding("shape", "error", number, parts))
            continue
        messages, responses = parts
        problems = _role_order(messages, fmt)
        findings += [Finding("role_order", "error", number, p) for p in problems]
        for response in responses:
            if not response.strip():
                findings.append(Finding("empty_response", "error", number, "empty assistant reply"))
            elif cut := _looks_cut_off(response):
                findings.append(Finding("truncated", "warning", number, f"reply looks cut off: {cut}"))
        texts[number] = " ".join(" ".join(m["content"] for m in messages).split())
        if not problems:
            valid.append((number, row))
        if tokenizer is None:
            lengths.append(sum(len(m["content"]) for m in messages))

    if tokenizer is not None:
        lengths = _token_lengths(tokenizer, valid, fmt, max_length, findings)

    report = DataReport(
        path=str(path),
        rows=len(rows),
        data_format=fmt,
        length_unit="tokens" if tokenizer is not None else "characters",
        lengths=lengths,
    )
    report.duplicate_groups = _exact_duplicates(texts)
    for group in report.duplicate_groups:
        for duplicate in group[1:]:
            findings.append(Finding("exact_duplicate", "warning", duplicate, f"same text as line {group[0]}"))
    repeated = {line for group in report.duplicate_groups for line in group[1:]}
    normalised = {line: _normalise(text) for line, text in texts.items() if line not in repeated}
    report.near_duplicates = _near_duplicates(normalised, near_threshold)
    for a, b, similarity in report.near_duplicates:
        findings.append(
            Finding("near_duplicate", "warning", b, f"near duplicate of line {a} (Jaccard {similarity:.2f})")
        )
    report.findings = sorted(findings, key=lambda f: (f.line, CHECKS.index(f.check)))
    return report


def _row_parts(row: dict[str, Any], fmt: str) -> tuple[list[dict[str, Any]], list[str]] | str:
    """(messages, target replies), or what is wrong with the row's shape."""
    if fmt == "messages":
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            return "no 'messages' list"
        bad = _bad_messages(messages)
        if bad:
            return bad
        return messages, _targets(messages)
    prompt, completion = row.get("prompt"), row.get("completion")
    if isinstance(prompt, str) and isinstance(completion, str):
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], [
            completion
        ]
    if isinstance(prompt, list) and isinstance(completion, list) and prompt and completion:
        bad = _bad_messages(prompt + completion)
        if bad:
            return bad
        return prompt + completion, _targets(completion)
    return "expected 'prompt' and 'completion', both strings or both non-empty message lists"


def _targets(messages: list[dict[str, Any]]) -> list[str]:
    """The replies training learns from: ``weight: 0`` leaves one out (and may be empty)."""
    return [m["content"] for m in messages if m["role"] == "assistant" and m.get("weight", 1) != 0]


def _bad_messages(messages: list[Any]) -> str:
    for number, message in enumerate(messages, 1):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            return f"message {number}: expected an object with a string 'content'"
        if not isinstance(message.get("role"), str):
            return f"message {number}: no 'role'"
    return ""


def _role_order(messages: Sequence[dict[str, Any]], fmt: str) -> list[str]:
    roles = [m["role"] for m in messages]
    problems = [f"message {i}: unknown role {r!r}" for i, r in enumerate(roles, 1) if r not in _ROLES]
    if problems:
        return problems
    for i, role in enumerate(roles[1:], 2):
        previous = roles[i - 2]
        if role == "system":
            problems.append(f"message {i}: a system message after the first message")
        elif role == previous and role in {"user", "assistant"}:
            problems.append(f"message {i}: two {role} messages in a row")
        elif role == "tool" and previous not in {"assistant", "tool"}:
            problems.append(f"message {i}: a tool result that follows no assistant call")
    first = next((r for r in roles if r != "system"), None)
    if first is None:
        problems.append("only system messages")
    elif first != "user":
        problems.append(f"the conversation starts with {first!r}, not 'user'")
    if "assistant" not in roles:
        problems.append("no assistant message: nothing to learn")
    elif roles[-1] != "assistant":
        problems.append(f"ends with {roles[-1]!r}: the last message is never learned from")
    return problems


def _looks_cut_off(text: str) -> str:
    stripped = text.rstrip()
    if stripped.count("```") % 2:
        return "an unclosed code fence"
    depth: dict[str, int] = defaultdict(int)
    for closing, name in _TAG.findall(stripped):
        depth[name] += -1 if closing else 1
    unclosed = sorted(name for name, d in depth.items() if d > 0)
    if unclosed:
        return f"unclosed <{unclosed[0]}>"
    if stripped.endswith(_CUT_OFF_ENDINGS):
        return f"ends with {stripped[-1]!r}"
    return ""


def _token_lengths(
    tokenizer: Any,
    valid: Sequence[tuple[int, dict[str, Any]]],
    fmt: str,
    max_length: int | None,
    findings: list[Finding],
) -> list[int]:
    from .sft_data import SFTDataError, tokenize_rows

    lengths: list[int] = []
    for number, row in valid:
        try:
            (tokenized,) = tokenize_rows(tokenizer, [row], fmt, None)  # type: ignore[arg-type]
        except SFTDataError as exc:
            findings.append(Finding("shape", "error", number, str(exc).removeprefix("row 1: ")))
            continue
        n = len(tokenized.input_ids)
        lengths.append(n)
        if max_length is not None and n > max_length:
            kept = sum(1 for label in tokenized.labels[:max_length] if label != -100)
            if kept == 0:
                findings.append(
                    Finding("too_long", "error", number, f"{n} tokens: no reply token fits in {max_length}")
                )
            else:
                findings.append(
                    Finding("too_long", "warning", number, f"{n} tokens: cut at max_length {max_length}")
                )
    return lengths


def _normalise(text: str) -> str:
    """Case, punctuation and operators dropped: for near duplicates only (it makes
    "Is 5 > 3?" and "Is 5 < 3?" the same text)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def _exact_duplicates(texts: dict[int, str]) -> list[list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for line, text in texts.items():
        groups[text].append(line)
    return [lines for lines in groups.values() if len(lines) > 1]


def _shingles(text: str, n: int = 3) -> set[str]:
    words = text.split()
    if len(words) < n:
        return {text} if text else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def _near_duplicates(
    texts: dict[int, str], threshold: float, *, permutations: int = 64, bands: int = 16
) -> list[tuple[int, int, float]]:
    import numpy as np

    lines = list(texts)  # exact duplicates are left out by the caller: they are reported apart
    shingle_sets = [_shingles(text) for text in texts.values()]
    prime = np.uint64((1 << 31) - 1)
    rng = np.random.default_rng(0)
    a = rng.integers(1, int(prime), permutations, dtype=np.uint64)
    b = rng.integers(0, int(prime), permutations, dtype=np.uint64)
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    rows = permutations // bands
    for index, shingles in enumerate(shingle_sets):
        if not shingles:
            continue
        hashed = (
            np.array(
                [
                    int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "little")
                    for s in shingles
                ],
                dtype=np.uint64,
            )
            % prime
        )
        signature = ((np.outer(a, hashed) + b[:, None]) % prime).min(axis=1)
        for band in range(bands):
            buckets[(band, signature[band * rows : (band + 1) * rows].tobytes())].append(index)
    candidates = {(i, j) for members in buckets.values() for i in members for j in members if i < j}
    found = []
    for i, j in sorted(candidates):
        x, y = shingle_sets[i], shingle_sets[j]
        similarity = len(x & y) / len(x | y)
        if similarity >= threshold:
            found.append((lines[i], lines[j], similarity))
    return sorted(found)
