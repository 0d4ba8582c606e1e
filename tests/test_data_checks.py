"""``arbiter data check`` on crafted JSONL: every check finds what it should, on the
line it should, and only errors make the command fail."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from reward_server.cli import main
from trainer_adapter.data_checks import check_data


def _conversation(user: str, reply: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


LONG = (
    "the capital of france is paris and the capital of italy is rome while the capital of spain is madrid "
    "and the capital of portugal is lisbon so every country here has one capital city"
)
ROWS: list[object] = [
    _conversation("capitals?", LONG),  # 1
    _conversation("capitals?", LONG),  # 2: exact duplicate of 1
    _conversation("Capitals ?", LONG.replace("lisbon", "porto")),  # 3: near duplicate of 1
    _conversation("empty?", "   "),  # 4: empty reply
    {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},  # 5: two users
    {"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}]},  # 6
    "not json",  # 7
    _conversation("code?", "```python\nprint(1)\n"),  # 8: unclosed fence
    _conversation("list?", "first, second,"),  # 9: ends with a comma
    {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q"},
            {"role": "system", "content": "s2"},
            {"role": "assistant", "content": "a"},
        ]
    },  # 10
    {"prompt": "p", "completion": "c"},  # 11: not a conversation in a messages file
]


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_each_check_finds_its_rows(tmp_path: Path) -> None:
    report = check_data(_write(tmp_path / "data.jsonl", ROWS))
    found = {(f.line, f.check, f.severity) for f in report.findings}
    assert (2, "exact_duplicate", "warning") in found
    assert (3, "near_duplicate", "warning") in found
    assert (4, "empty_response", "error") in found
    assert (5, "role_order", "error") in found
    assert (6, "role_order", "error") in found
    assert (7, "json", "error") in found
    assert (8, "truncated", "warning") in found
    assert (9, "truncated", "warning") in found
    assert (10, "role_order", "error") in found
    assert (11, "shape", "error") in found
    assert {f.line for f in report.findings} == {2, 3, 4, 5, 6, 7, 8, 9, 10, 11}  # line 1 is clean
    messages = {
        line: " | ".join(f.message for f in report.findings if f.check == "role_order" and f.line == line)
        for line in (5, 6, 10)
    }
    assert "two user messages in a row" in messages[5]
    assert "starts with 'assistant'" in messages[6] and "ends with 'user'" in messages[6]
    assert "system message after the first" in messages[10]
    assert report.duplicate_groups == [[1, 2]]
    ((a, b, similarity),) = report.near_duplicates
    assert (a, b) == (1, 3) and 0.8 <= similarity < 1
    assert report.rows == 10 and report.length_unit == "characters"
    assert sum(c for _, _, c in report.histogram()) == len(report.lengths)


def test_unrelated_rows_are_not_near_duplicates(tmp_path: Path) -> None:
    rows: list[object] = [
        _conversation(f"question {i}", f"answer number {i} is about topic {i * 7} and nothing else {i}")
        for i in range(40)
    ]
    report = check_data(_write(tmp_path / "clean.jsonl", rows))
    assert not report.findings, report.findings


def test_command_fails_on_errors_and_writes_the_report(tmp_path: Path) -> None:
    data = _write(tmp_path / "data.jsonl", ROWS)
    result = CliRunner().invoke(main, ["data", "check", str(data), "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 1, result.output
    assert "role_order" in result.output and "Length histogram" in result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] is False and report["errors"] >= 6 and report["duplicate_groups"] == [[1, 2]]


def test_command_passes_with_warnings_only(tmp_path: Path) -> None:
    data = _write(tmp_path / "data.jsonl", ROWS[:3])
    result = CliRunner().invoke(main, ["data", "check", str(data)])
    assert result.exit_code == 0, result.output
    assert "0 error(s), 2 warning(s)" in result.output


def test_exact_duplicates_compare_the_raw_text(tmp_path: Path) -> None:
    rows: list[object] = [
        _conversation("Is 5 > 3?", "yes"),  # 1
        _conversation("Is 5 < 3?", "yes"),  # 2: not the same question
        _conversation("Is 5  >  3?", "yes"),  # 3: line 1 with other spacing
    ]
    report = check_data(_write(tmp_path / "ops.jsonl", rows))
    assert report.duplicate_groups == [[1, 3]]
    assert [(a, b) for a, b, _ in report.near_duplicates] == [(1, 2)]  # still worth a look


def test_an_empty_reply_with_weight_zero_is_not_an_error(tmp_path: Path) -> None:
    row = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "", "weight": 0},
            {"role": "user", "content": "count"},
            {"role": "assistant", "content": "0 1 2"},
        ]
    }
    report = check_data(_write(tmp_path / "weights.jsonl", [row]))
    assert not report.findings, report.findings
