"""Built-in scorers. Each is an ordinary plugin written against the SDK, the same
way a user's scorer is; the server registers them before any plugin."""

from __future__ import annotations

from sdk import Scorer

from .code import CodeScorer
from .composite import CompositeScorer
from .format import FormatScorer
from .length import LengthScorer
from .math import MathScorer
from .reward_model import RewardModelScorer

__all__ = [
    "BUILTIN_SCORERS",
    "CodeScorer",
    "CompositeScorer",
    "FormatScorer",
    "LengthScorer",
    "MathScorer",
    "RewardModelScorer",
]

BUILTIN_SCORERS: tuple[type[Scorer], ...] = (
    MathScorer,
    FormatScorer,
    LengthScorer,
    CompositeScorer,
    CodeScorer,
    RewardModelScorer,
)
