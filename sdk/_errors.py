"""The SDK's one exception tree.

    ArbiterError
    ├── ScorerDefinitionError    a scorer or plugin is malformed; raised when it is loaded
    ├── SampleError              raised *by a scorer*: this sample cannot be scored
    │                            (becomes the result's status, INVALID_INPUT by default)
    └── ClientError              the client got no result for a call
        ├── ServerUnavailableError   no server answered (after retries)
        ├── DeadlineExceededError    the call's deadline passed
        ├── AuthenticationError      missing or wrong token
        └── RequestRejectedError     the server refused the request as a whole

Per-sample failures are never exceptions on the client side: they arrive as a
``ScoreResult`` whose ``status`` says what went wrong. Client exceptions are for
calls that produced no results at all.
"""

from __future__ import annotations

from ._types import Status

__all__ = [
    "ArbiterError",
    "AuthenticationError",
    "ClientError",
    "DeadlineExceededError",
    "RequestRejectedError",
    "SampleError",
    "ScorerDefinitionError",
    "ServerUnavailableError",
]


class ArbiterError(Exception):
    """Base of every error the SDK raises."""


class ScorerDefinitionError(ArbiterError):
    """A scorer or plugin cannot be used; the message says how to fix it."""


class SampleError(ArbiterError):
    """Raise from a scorer when a sample cannot be scored.

    The runner turns it into a result with ``status`` (INVALID_INPUT unless told
    otherwise) and the message as the reason, instead of a SCORER_ERROR.
    """

    def __init__(self, reason: str, status: Status = Status.INVALID_INPUT) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class ClientError(ArbiterError):
    """A call to the server produced no result."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class ServerUnavailableError(ClientError):
    """No server answered, after the configured retries."""


class DeadlineExceededError(ClientError):
    """The call's deadline passed before the server answered."""


class AuthenticationError(ClientError):
    """The server refused the call's credentials (missing or wrong token)."""


class RequestRejectedError(ClientError):
    """The server refused the request as a whole (malformed, too large, ...)."""
