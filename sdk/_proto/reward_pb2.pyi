from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    OK: _ClassVar[Status]
    INVALID_INPUT: _ClassVar[Status]
    TIMEOUT: _ClassVar[Status]
    SCORER_ERROR: _ClassVar[Status]
    SANDBOX_VIOLATION: _ClassVar[Status]
    UNKNOWN_SCORER: _ClassVar[Status]
    OVERLOADED: _ClassVar[Status]
    DEADLINE_EXCEEDED: _ClassVar[Status]
    INTERNAL: _ClassVar[Status]
STATUS_UNSPECIFIED: Status
OK: Status
INVALID_INPUT: Status
TIMEOUT: Status
SCORER_ERROR: Status
SANDBOX_VIOLATION: Status
UNKNOWN_SCORER: Status
OVERLOADED: Status
DEADLINE_EXCEEDED: Status
INTERNAL: Status

class Message(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class Conversation(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ...) -> None: ...

class Content(_message.Message):
    __slots__ = ("text", "conversation")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    text: str
    conversation: Conversation
    def __init__(self, text: _Optional[str] = ..., conversation: _Optional[_Union[Conversation, _Mapping]] = ...) -> None: ...

class AssertProgram(_message.Message):
    __slots__ = ("source",)
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    source: str
    def __init__(self, source: _Optional[str] = ...) -> None: ...

class IoCase(_message.Message):
    __slots__ = ("input", "output")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    input: str
    output: str
    def __init__(self, input: _Optional[str] = ..., output: _Optional[str] = ...) -> None: ...

class IoCases(_message.Message):
    __slots__ = ("cases",)
    CASES_FIELD_NUMBER: _ClassVar[int]
    cases: _containers.RepeatedCompositeFieldContainer[IoCase]
    def __init__(self, cases: _Optional[_Iterable[_Union[IoCase, _Mapping]]] = ...) -> None: ...

class CallCases(_message.Message):
    __slots__ = ("fn_name", "inputs_json", "outputs_json")
    FN_NAME_FIELD_NUMBER: _ClassVar[int]
    INPUTS_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_JSON_FIELD_NUMBER: _ClassVar[int]
    fn_name: str
    inputs_json: _containers.RepeatedScalarFieldContainer[str]
    outputs_json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, fn_name: _Optional[str] = ..., inputs_json: _Optional[_Iterable[str]] = ..., outputs_json: _Optional[_Iterable[str]] = ...) -> None: ...

class TestSuite(_message.Message):
    __slots__ = ("assert_program", "io_cases", "call_cases", "options")
    ASSERT_PROGRAM_FIELD_NUMBER: _ClassVar[int]
    IO_CASES_FIELD_NUMBER: _ClassVar[int]
    CALL_CASES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    assert_program: AssertProgram
    io_cases: IoCases
    call_cases: CallCases
    options: _struct_pb2.Struct
    def __init__(self, assert_program: _Optional[_Union[AssertProgram, _Mapping]] = ..., io_cases: _Optional[_Union[IoCases, _Mapping]] = ..., call_cases: _Optional[_Union[CallCases, _Mapping]] = ..., options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("prompt", "completion", "reference", "tests", "metadata")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    prompt: Content
    completion: Content
    reference: str
    tests: TestSuite
    metadata: _struct_pb2.Struct
    def __init__(self, prompt: _Optional[_Union[Content, _Mapping]] = ..., completion: _Optional[_Union[Content, _Mapping]] = ..., reference: _Optional[str] = ..., tests: _Optional[_Union[TestSuite, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("request_id", "scorer", "sample", "params")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    scorer: str
    sample: Sample
    params: _struct_pb2.Struct
    def __init__(self, request_id: _Optional[str] = ..., scorer: _Optional[str] = ..., sample: _Optional[_Union[Sample, _Mapping]] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("queued_ms", "scoring_ms")
    QUEUED_MS_FIELD_NUMBER: _ClassVar[int]
    SCORING_MS_FIELD_NUMBER: _ClassVar[int]
    queued_ms: float
    scoring_ms: float
    def __init__(self, queued_ms: _Optional[float] = ..., scoring_ms: _Optional[float] = ...) -> None: ...

class ScoreResult(_message.Message):
    __slots__ = ("reward", "status", "reason", "components", "details", "timing", "scorer")
    class ComponentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REWARD_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    reward: float
    status: Status
    reason: str
    components: _containers.ScalarMap[str, float]
    details: _struct_pb2.Struct
    timing: Timing
    scorer: str
    def __init__(self, reward: _Optional[float] = ..., status: _Optional[_Union[Status, str]] = ..., reason: _Optional[str] = ..., components: _Optional[_Mapping[str, float]] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., scorer: _Optional[str] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("request_id", "result")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    result: ScoreResult
    def __init__(self, request_id: _Optional[str] = ..., result: _Optional[_Union[ScoreResult, _Mapping]] = ...) -> None: ...

class ScoreBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ScoreRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ScoreRequest, _Mapping]]] = ...) -> None: ...

class ScoreBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[ScoreResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[ScoreResponse, _Mapping]]] = ...) -> None: ...

class ListScorersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ScorerInfo(_message.Message):
    __slots__ = ("name", "type", "description", "params_schema_json", "default_params_json", "cpu_bound")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    CPU_BOUND_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    description: str
    params_schema_json: str
    default_params_json: str
    cpu_bound: bool
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., description: _Optional[str] = ..., params_schema_json: _Optional[str] = ..., default_params_json: _Optional[str] = ..., cpu_bound: _Optional[bool] = ...) -> None: ...

class ListScorersResponse(_message.Message):
    __slots__ = ("scorers",)
    SCORERS_FIELD_NUMBER: _ClassVar[int]
    scorers: _containers.RepeatedCompositeFieldContainer[ScorerInfo]
    def __init__(self, scorers: _Optional[_Iterable[_Union[ScorerInfo, _Mapping]]] = ...) -> None: ...
