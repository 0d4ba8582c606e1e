"""Training integration built on the SDK client: reward functions for TRL trainers
(and any loop with the same calling convention), RL run configs and evaluation.
Imports nothing of TRL or torch, so the server installs without them."""

from .evaluate import EvalConfig, pass_at_k
from .rewards import (
    CombinedReward,
    RewardServerError,
    ServerReward,
    combined_reward,
    reward_config,
    server_reward,
)
from .rl import GRPORunConfig, PPORunConfig

__all__ = [
    "CombinedReward",
    "EvalConfig",
    "GRPORunConfig",
    "PPORunConfig",
    "RewardServerError",
    "ServerReward",
    "combined_reward",
    "pass_at_k",
    "reward_config",
    "server_reward",
]
