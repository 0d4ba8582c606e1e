"""Arbiter SDK: write scorers, test them locally, and call a reward server.

Plugin authors need ``scorer`` / ``Scorer``, ``Sample``, ``ScoreResult`` and
``Status``; trainers need ``RewardClient`` or ``AsyncRewardClient``. Testing helpers
live in ``sdk.testing``. The exception tree is documented in ``sdk._errors``.
"""

from ._client import AsyncRewardClient, RewardClient
from ._errors import (
    ArbiterError,
    AuthenticationError,
    ClientError,
    DeadlineExceededError,
    RequestRejectedError,
    SampleError,
    ScorerDefinitionError,
    ServerUnavailableError,
)
from ._execute import CONFIG_ONLY
from ._registry import ENTRY_POINT_GROUP, ScorerEntry, ScorerRegistry
from ._scorer import NoParams, ScoreOutput, Scorer, ScoringContext, scorer
from ._types import (
    CallCases,
    IoCase,
    Message,
    Sample,
    ScoreResult,
    ScorerInfo,
    Status,
    TestSuite,
    content_from_value,
)

__all__ = [
    "CONFIG_ONLY",
    "ENTRY_POINT_GROUP",
    "ArbiterError",
    "AsyncRewardClient",
    "AuthenticationError",
    "CallCases",
    "ClientError",
    "DeadlineExceededError",
    "IoCase",
    "Message",
    "NoParams",
    "RequestRejectedError",
    "RewardClient",
    "Sample",
    "SampleError",
    "ScoreOutput",
    "ScoreResult",
    "Scorer",
    "ScorerDefinitionError",
    "ScorerEntry",
    "ScorerInfo",
    "ScorerRegistry",
    "ScoringContext",
    "ServerUnavailableError",
    "Status",
    "TestSuite",
    "content_from_value",
    "scorer",
]
