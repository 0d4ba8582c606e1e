"""The ``format`` scorer: does the completion have the required shape?

Checks, each optional, all configured per scorer or per request:

* ``pattern``: a regular expression that must ``search``/``match``/``fullmatch``;
* ``tags``: required ``<tag>...</tag>`` blocks (e.g. ``["think", "answer"]``), in order
  unless told otherwise, optionally exactly once each;
* ``json`` / ``json_schema``: the completion (or its ```json block, or its first
  ``{...}``) is valid JSON, optionally valid against a JSON schema.

The reward is 1.0 when every check passes and 0.0 otherwise, or the fraction of
checks passed with ``partial_credit``.

It runs on the server's event loop, so it must never hang. Patterns come from
requests, and a catastrophic one (``(a|aa)+$``) would stall every call: Python's
``re`` cannot be interrupted, the ``regex`` module takes a timeout. So every regular
expression here runs under ``regex`` with one time budget per sample
(``regex_timeout_s``), and an overrun is a TIMEOUT result. That includes the
patterns inside a JSON schema: jsonschema would run them with ``re`` (a schema
``pattern`` of ``^(a|aa)+$`` held the loop for most of a minute on 31 characters),
so the keywords that use regular expressions are replaced by ``regex`` versions. A
schema's ``$ref`` is never fetched from the network (that would block the loop and
let a request make the server open URLs): only references inside the schema resolve.
"""

from __future__ import annotations

import contextvars
import functools
import json
import time
from collections.abc import Iterator
from typing import Any, Literal

import jsonschema
import referencing
import referencing.exceptions
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
    # The field for ``json`` is ``json_valid``: a field named ``json`` would shadow
    # BaseModel.json. Requests and configs say ``json``; the Python name works too.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True)

    pattern: str | None = Field(None, description="regular expression the completion must satisfy")
    mode: Literal["search", "match", "fullmatch"] = "search"
    flags: list[FlagName] = Field(default_factory=list)
    tags: list[str] | None = Field(None, description='required tags, e.g. ["think", "answer"]')
    tags_in_order: bool = True
    exactly_once: bool = False
    json_valid: bool = Field(False, alias="json", description="completion must hold valid JSON")
    json_schema: dict[str, Any] | None = Field(None, description="JSON schema the JSON must satisfy")
    partial_credit: bool = Field(False, description="reward = fraction of checks passed")
    regex_timeout_s: float = Field(
        0.1, gt=0, le=5, description="time budget per sample for all its regular expressions"
    )


_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("format_regex_deadline")


def _time_left() -> float:
    """Seconds left of this sample's ``regex_timeout_s``; TimeoutError once spent."""
    left = _deadline.get() - time.monotonic()
    if left <= 0:
        raise TimeoutError("regex budget spent")
    return left


@functools.lru_cache(maxsize=512)
def _compile(pattern: str, flags: int) -> regex.Pattern[str]:
    try:
        return regex.compile(pattern, flags)
    except regex.error as exc:
        raise SampleError(f"invalid pattern {pattern!r}: {exc}") from None


def _search(pattern: str, text: str) -> bool:
    return _compile(pattern, 0).search(text, timeout=_time_left()) is not None


@functools.lru_cache(maxsize=256)
def _tag_pattern(tag: str) -> regex.Pattern[str]:
    escaped = regex.escape(tag)
    return _compile(rf"<{escaped}>(.*?)</{escaped}>", regex.DOTALL)


_FENCED = regex.compile(r"```(?:json)?[ \t]*\r?\n(.*?)```", regex.DOTALL)


def _json_text(text: str) -> str:
    """The JSON part: a ```json fenced block, else the whole text, else the first {...}."""
    fenced = _FENCED.search(text, timeout=_time_left())
    if fenced:
        return str(fenced.group(1))
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return stripped
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else stripped


# jsonschema's keywords that call ``re``, redone with ``_search`` (same semantics and
# messages as jsonschema 4's own): pattern, patternProperties, and additionalProperties
# (which matches keys against the patternProperties). unevaluatedProperties also
# reads patternProperties with ``re``; _schema_validator refuses that pairing rather
# than copy jsonschema's evaluated-keys walk.


def _pattern_keyword(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties_keyword(
    validator: Any, pattern_properties: dict[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties_keyword(validator: Any, allowed: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = sorted(
        (key for key in instance if key not in properties and not any(_search(p, key) for p in patterns)),
        key=str,
    )
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        joined = ", ".join(repr(extra) for extra in extras)
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            listed = ", ".join(repr(p) for p in sorted(patterns))
            yield jsonschema.ValidationError(f"{joined} {verb} not match any of the regexes: {listed}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield jsonschema.ValidationError(
                f"Additional properties are not allowed ({joined} {verb} unexpected)"
            )


_SAFE_KEYWORDS = {
    "pattern": _pattern_keyword,
    "patternProperties": _pattern_properties_keyword,
    "additionalProperties": _additional_properties_keyword,
}


@functools.lru_cache(maxsize=16)
def _safe_validator_class(base: Any) -> Any:
    return jsonschema.validators.extend(base, _SAFE_KEYWORDS)


def _keywords_in(schema: Any) -> set[str]:
    """Every key used anywhere in the schema (iterative: schemas can nest deeply)."""
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            found.update(k for k in node if isinstance(k, str))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


@functools.lru_cache(maxsize=128)
def _schema_validator(schema_json: str) -> Any:
    """A checked, ready validator for one schema (keyed by its canonical JSON text)."""
    schema = json.loads(schema_json)
    base = jsonschema.validators.validator_for(schema)
    try:
        base.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise SampleError(f"json_schema is not a valid schema: {exc.message}") from None
    if {"unevaluatedProperties", "patternProperties"} <= _keywords_in(schema):
        raise SampleError(
            "json_schema: unevaluatedProperties together with patternProperties is not supported"
        )
    # An empty registry: references inside the schema resolve, nothing is fetched.
    return _safe_validator_class(base)(schema, registry=referencing.Registry())


class FormatScorer(Scorer):
    """Format checks: a regex, required <tag> blocks, valid JSON (optionally against a schema)."""

    name = "format"
    Params = FormatParams

    def score(self, sample: Sample, params: FormatParams) -> ScoreResult:
        text = sample.completion_text
        checks: dict[str, bool] = {}
        details: dict[str, Any] = {}
        token = _deadline.set(time.monotonic() + params.regex_timeout_s)
        try:
            if params.pattern is not None:
                flags = 0
                for flag in params.flags:
                    flags |= _FLAGS[flag]
                compiled = _compile(params.pattern, flags)
                matcher = getattr(compiled, params.mode)
                checks["pattern"] = matcher(text, timeout=_time_left()) is not None
            if params.tags:
                checks["tags"] = self._tags(text, params, details)
            if params.json_valid or params.json_schema is not None:
                checks["json"] = self._json(text, params, details)
        except TimeoutError:  # regex's own timeout, or the budget already spent
            return ScoreResult.failure(
                Status.TIMEOUT,
                f"regular expressions took longer than {params.regex_timeout_s:g}s on this completion"
                " (catastrophic backtracking?)",
            )
        finally:
            _deadline.reset(token)
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
            matches = list(_tag_pattern(tag).finditer(text, timeout=_time_left()))
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
        # The schema is checked first, so a bad schema is refused even when this
        # completion holds no JSON.
        validator = None
        if params.json_schema is not None:
            validator = _schema_validator(json.dumps(params.json_schema, sort_keys=True))
        try:
            value = json.loads(_json_text(text))
        except (json.JSONDecodeError, RecursionError) as exc:
            details["json_error"] = str(exc) or type(exc).__name__
            return False
        if validator is None:
            return True
        try:
            error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        except referencing.exceptions.Unresolvable as exc:
            raise SampleError(
                f"json_schema has a $ref that does not resolve ({exc}); references to other"
                " documents are not fetched"
            ) from None
        except RecursionError:
            # Like JSON too deep to parse: the completion fails the check.
            details["schema_error"] = "JSON too deeply nested to validate"
            return False
        if error is not None:
            details["schema_error"] = error.message
            return False
        return True
