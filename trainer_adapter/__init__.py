"""Training integration built on the SDK client: reward functions for TRL trainers
(and any loop with the same calling convention). Imports nothing of TRL, so the
server installs without it."""

from .rewards import RewardServerError, ServerReward, server_reward

__all__ = ["RewardServerError", "ServerReward", "server_reward"]
