"""The ``format`` scorer: does the completion have the required shape?

Checks, each optional, all configured per scorer or per request:

* ``pattern``: a regular expression that must ``search``/``match``/``fullmatch``;
* ``tags``: required ``<tag>...</tag>`` blocks (e.g. ``["think", "answer"]``), in order
  unless told otherwise, optionally exactly once each;
* ``json`` / ``json_schema``: the completion (or its ```json block, or its first
  ``{...}``) is valid JSON, optionally valid against a JSON schema.

The reward is 1.0 when every check passes and 0.0 otherwise, or the fraction of
checks passed with ``partial_credit``. It runs on the server's event loop, so it
must never hang: patterns come from requests, and a catastrophic one (``(a+)+$``)
would stall every call. Python's ``re`` cannot be interrupted; the ``regex`` module
takes a timeout, and an overrun is a TIMEOUT result.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Literal

import jsonschema
import regex
from pydantic import BaseModel, ConfigDict, Field

from sdk import Sample, SampleError, Scorer, ScoreResult, Status

__all__ = ["FormatParams", "FormatScorer"]

_FLAGS = {
    "IGNORECASE": regex.IGNORECASE,
    "MULTILINE": regex.MULTILINE,
    "DOTALL": regex.DOTALL,
    "VERBOSE": regex.VERBOSE,
    "ASCII": regex.ASCII,
}
FlagName = Literal["IGNORECASE", "MULTILINE", "DOTALL", "VERBOSE", "ASCII"]


class FormatParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str | None = Field(None, description="regular expression the completion must satisfy")
    mode: Literal["search", "match", "fullmatch"] = "search"
    flags: list[FlagName] = Field(default_factory=list)
    tags: list[str] | None = Field(None, description='required tags, e.g. ["think", "answer"]')
    tags_in_order: bool = True
    exactly_once: bool = False
    json_valid: bool = Field(False, alias="json", description="completion must hold valid JSON")
    json_schema: dict[str, Any] | None = Field(None, description="JSON schema the JSON must satisfy")
    partial_credit: bool = Field(False, description="reward = fraction of checks passed")
    regex_timeout_s: float = Field(0.1, gt=0, le=5)


@functools.lru_cache(maxsize=512)
def _compile(pattern: str, flags: int) -> regex.Pattern[str]:
    try:
        return regex.compile(pattern, flags)
    except regex.error as exc:
        raise SampleError(f"invalid pattern {pattern!r}: {exc}") from None


@functools.lru_cache(maxsize=256)
def _tag_pattern(tag: str) -> regex.Pattern[str]:
    escaped = regex.escape(tag)
    return _compile(rf"<{escaped}>(.*?)</{escaped}>", regex.DOTALL)


def _bounded_validator(base: Any, timeout_s: float) -> Any:
    """``base`` with ``pattern`` and ``patternProperties`` evaluated by ``regex`` under a
    timeout: schemas come from requests, and jsonschema's own ``re`` cannot be stopped.
    A timeout propagates as TimeoutError (the scorer reports TIMEOUT)."""

    def pattern(validator: Any, expected: str, instance: Any, schema: Any) -> Any:
        if isinstance(instance, str) and _compile(expected, 0).search(instance, timeout=timeout_s) is None:
            yield jsonschema.ValidationError(f"{instance!r} does not match {expected!r}")

    def pattern_properties(validator: Any, properties: dict[str, Any], instance: Any, schema: Any) -> Any:
        if not isinstance(instance, dict):
            return
        for expression, subschema in properties.items():
            compiled = _compile(expression, 0)
            for key, item in instance.items():
                if compiled.search(key, timeout=timeout_s) is not None:
                    yield from validator.descend(item, subschema, path=key, schema_path=expression)

    return jsonschema.validators.extend(base, {"pattern": pattern, "patternProperties": pattern_properties})


def _json_text(text: str) -> str:
    """The JSON part: a ```json fenced block, else the whole text, else the first {...}."""
    fenced = _compile(r"```(?:json)?\s*\n(.*?)```", regex.DOTALL).search(text)
    if fenced:
        return str(fenced.group(1))
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return stripped
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else stripped


class FormatScorer(Scorer):
    """Format checks: a regex, required <tag> blocks, valid JSON (optionally against a schema)."""

    name = "format"
    Params = FormatParams

    def score(self, sample: Sample, params: FormatParams) -> ScoreResult:
        text = sample.completion_text
        checks: dict[str, bool] = {}
        details: dict[str, Any] = {}
        try:
            if params.pattern is not None:
                flags = 0
                for flag in params.flags:
                    flags |= _FLAGS[flag]
                compiled = _compile(params.pattern, flags)
                matcher = getattr(compiled, params.mode)
                checks["pattern"] = matcher(text, timeout=params.regex_timeout_s) is not None
            if params.tags:
                checks["tags"] = self._tags(text, params, details)
        except TimeoutError:
            return ScoreResult.failure(
                Status.TIMEOUT,
                f"pattern took longer than {params.regex_timeout_s:g}s on this completion"
                " (catastrophic backtracking?)",
            )
        if params.json_valid or params.json_schema is not None:
            try:
                checks["json"] = self._json(text, params, details)
            except TimeoutError:
                return ScoreResult.failure(
                    Status.TIMEOUT, f"a json_schema pattern took longer than {params.regex_timeout_s:g}s"
                )
        if not checks:
            raise SampleError("format needs at least one check: pattern, tags, json or json_schema")
        passed = sum(checks.values())
        reward = passed / len(checks) if params.partial_credit else float(passed == len(checks))
        return ScoreResult(reward=reward, details={"checks": checks, **details})

    @staticmethod
    def _tags(text: str, params: FormatParams, details: dict[str, Any]) -> bool:
        assert params.tags is not None
        positions: list[int] = []
        missing: list[str] = []
        repeated: list[str] = []
        for tag in params.tags:
            matches = list(_tag_pattern(tag).finditer(text, timeout=params.regex_timeout_s))
            if not matches:
                missing.append(tag)
                continue
            if len(matches) > 1:
                repeated.append(tag)
            positions.append(matches[0].start())
        in_order = positions == sorted(positions)
        if missing:
            details["missing_tags"] = missing
        if params.exactly_once and repeated:
            details["repeated_tags"] = repeated
        if params.tags_in_order and not in_order:
            details["tags_out_of_order"] = True
        return (
            not missing and not (params.exactly_once and repeated) and (in_order or not params.tags_in_order)
        )

    @staticmethod
    def _json(text: str, params: FormatParams, details: dict[str, Any]) -> bool:
        try:
            value = json.loads(_json_text(text))
        except (json.JSONDecodeError, RecursionError) as exc:
            details["json_error"] = str(exc)
            return False
        if params.json_schema is None:
            return True
        try:
            base = jsonschema.validators.validator_for(params.json_schema)
            base.check_schema(params.json_schema)
        except jsonschema.SchemaError as exc:
            raise SampleError(f"json_schema is not a valid schema: {exc.message}") from None
        validator = _bounded_validator(base, params.regex_timeout_s)(params.json_schema)
        try:
            error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        except RecursionError:
            raise SampleError("json_schema or the JSON nests too deeply to check") from None
        if error is not None:
            details["schema_error"] = error.message
            return False
        return True
