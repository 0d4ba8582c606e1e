"""Translation between SDK values and ``arbiter.reward.v1`` messages.

The one place that knows both shapes. Struct fields carry JSON data, so integers
come back as floats (protobuf's Struct has a single number type).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2

from ._proto import reward_pb2 as pb
from ._types import CallCases, Content, IoCase, Message, Sample, ScoreResult, Status, TestSuite

__all__ = [
    "request_from_proto",
    "request_to_proto",
    "result_from_proto",
    "result_to_proto",
    "struct_from_dict",
    "struct_to_dict",
]


def struct_from_dict(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if value:
        try:
            out.update(value)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"not JSON-like data: {exc}") from exc
    return out


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain Python data (faster than json_format on the hot path)."""
    return {key: _from_value(item) for key, item in value.fields.items()}


def _from_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_from_value(item) for item in value.list_value.values]
    return None


def _content_to_proto(content: Content) -> pb.Content:
    if isinstance(content, str):
        return pb.Content(text=content)
    return pb.Content(
        conversation=pb.Conversation(messages=[pb.Message(role=m.role, content=m.content) for m in content])
    )


def _content_from_proto(content: pb.Content) -> Content:
    kind = content.WhichOneof("kind")
    if kind == "conversation":
        return tuple(Message(role=m.role, content=m.content) for m in content.conversation.messages)
    return content.text


def _tests_to_proto(tests: TestSuite) -> pb.TestSuite:
    out = pb.TestSuite(options=struct_from_dict(tests.options))
    if tests.assert_program is not None:
        out.assert_program.source = tests.assert_program
    elif tests.io_cases is not None:
        out.io_cases.cases.extend(pb.IoCase(input=c.input, output=c.output) for c in tests.io_cases)
        out.io_cases.SetInParent()
    elif tests.call_cases is not None:
        cases = tests.call_cases
        out.call_cases.fn_name = cases.fn_name
        out.call_cases.inputs_json.extend(json.dumps(v) for v in cases.inputs)
        out.call_cases.outputs_json.extend(json.dumps(v) for v in cases.outputs)
    return out


def _tests_from_proto(tests: pb.TestSuite) -> TestSuite | None:
    """Raises ValueError when the suite is malformed (bad JSON, unpaired cases)."""
    kind = tests.WhichOneof("kind")
    options = struct_to_dict(tests.options)
    if kind is None:
        if options:
            raise ValueError("tests has options but no assert_program, io_cases or call_cases")
        return None
    if kind == "assert_program":
        return TestSuite(assert_program=tests.assert_program.source, options=options)
    if kind == "io_cases":
        return TestSuite(
            io_cases=tuple(IoCase(input=c.input, output=c.output) for c in tests.io_cases.cases),
            options=options,
        )
    calls = tests.call_cases
    if len(calls.inputs_json) != len(calls.outputs_json):
        raise ValueError(
            f"call_cases has {len(calls.inputs_json)} inputs but {len(calls.outputs_json)} outputs"
        )
    try:
        inputs = tuple(json.loads(v) for v in calls.inputs_json)
        outputs = tuple(json.loads(v) for v in calls.outputs_json)
    except json.JSONDecodeError as exc:
        raise ValueError(f"call_cases holds invalid JSON: {exc}") from exc
    except RecursionError:
        raise ValueError("call_cases holds JSON nested too deeply to read") from None
    return TestSuite(
        call_cases=CallCases(fn_name=calls.fn_name, inputs=inputs, outputs=outputs), options=options
    )


def request_to_proto(
    scorer: str,
    sample: Sample,
    params: Mapping[str, Any] | None = None,
    request_id: str = "",
) -> pb.ScoreRequest:
    """Build a request; raises ValueError for data that cannot travel (e.g. text
    that is not valid UTF-8), so that one bad sample fails alone, on the client."""
    try:
        message = pb.Sample(
            prompt=_content_to_proto(sample.prompt),
            completion=_content_to_proto(sample.completion),
            metadata=struct_from_dict(sample.metadata),
        )
        if sample.reference is not None:
            message.reference = sample.reference
        if sample.tests is not None:
            message.tests.CopyFrom(_tests_to_proto(sample.tests))
        return pb.ScoreRequest(
            request_id=request_id, scorer=scorer, sample=message, params=struct_from_dict(params)
        )
    except (UnicodeError, ValueError, TypeError) as exc:
        raise ValueError(f"sample cannot be encoded: {exc}") from exc


def request_from_proto(request: pb.ScoreRequest) -> tuple[Sample, dict[str, Any]]:
    """The sample and params of a request; raises ValueError when malformed."""
    sample = request.sample
    return (
        Sample(
            completion=_content_from_proto(sample.completion),
            prompt=_content_from_proto(sample.prompt),
            reference=sample.reference if sample.HasField("reference") else None,
            tests=_tests_from_proto(sample.tests) if sample.HasField("tests") else None,
            metadata=struct_to_dict(sample.metadata),
        ),
        struct_to_dict(request.params),
    )


def result_to_proto(result: ScoreResult) -> pb.ScoreResult:
    out = pb.ScoreResult(
        reward=result.reward,
        status=int(result.status),  # type: ignore[arg-type]
        reason=result.reason,
        components=dict(result.components),
        timing=pb.Timing(queued_ms=result.queued_ms, scoring_ms=result.scoring_ms),
        scorer=result.scorer,
    )
    if result.details:
        try:
            out.details.update(_jsonable(result.details))
        except (ValueError, TypeError):
            out.details.update({"repr": repr(result.details)})
    return out


def result_from_proto(result: pb.ScoreResult, request_id: str = "") -> ScoreResult:
    try:
        status = Status(result.status)
    except ValueError:
        status = Status.UNSPECIFIED
    return ScoreResult(
        reward=result.reward,
        status=status,
        reason=result.reason,
        components=dict(result.components),
        details=struct_to_dict(result.details),
        scorer=result.scorer,
        queued_ms=result.timing.queued_ms,
        scoring_ms=result.timing.scoring_ms,
        request_id=request_id,
    )


def _jsonable(value: Mapping[str, Any]) -> dict[str, Any]:
    """Details as JSON data; anything JSON cannot hold becomes its repr."""
    result: dict[str, Any] = json.loads(json.dumps(value, default=repr))
    return result
