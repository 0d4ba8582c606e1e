"""Training integration built on the SDK client: reward functions for TRL trainers
(and any loop with the same calling convention), RL run configs and evaluation.
Imports nothing of TRL or torch, so the server installs without them."""

from .evaluate import EvalConfig, pass_at_k
from .rewards import RewardServerError, ServerReward, server_reward
from .rl import GRPORunConfig, PPORunConfig

__all__ = [
    "EvalConfig",
    "GRPORunConfig",
    "PPORunConfig",
    "RewardServerError",
    "ServerReward",
    "pass_at_k",
    "server_reward",
]
