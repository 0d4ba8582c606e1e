"""A rich progress bar for training runs, with the latest mean reward in it.

A ``transformers.TrainerCallback`` (TRL's trainers call the same hooks): the bar
advances on each optimizer step and shows the last logged reward, read from the
first of ``reward_keys`` present in a log entry (GRPO logs ``reward``, PPO
``objective/scores``). TRL's own tqdm bar is switched off by the stage
(``disable_tqdm=True``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import TrainerCallback

__all__ = ["RewardProgress"]


class RewardProgress(TrainerCallback):  # type: ignore[misc]  # transformers is untyped here
    def __init__(self, stage: str, reward_keys: Sequence[str], console: Console | None = None) -> None:
        self.stage = stage
        self.reward_keys = tuple(reward_keys)
        self.last_reward: float | None = None
        self.rewards: list[float] = []
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("reward {task.fields[reward]}"),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
        )
        self._task: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self._progress.start()
            self._task = self._progress.add_task(
                self.stage, total=state.max_steps or None, completed=state.global_step, reward="-"
            )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=state.global_step, total=state.max_steps or None)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        for key in self.reward_keys:
            if logs and isinstance(logs.get(key), int | float):
                self.last_reward = float(logs[key])
                self.rewards.append(self.last_reward)
                if self._task is not None:
                    self._progress.update(self._task, reward=f"{self.last_reward:.3f}")
                break

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=state.global_step)
        self.close()

    def close(self) -> None:
        """Stop the bar (also when training raised)."""
        if self._task is not None:
            self._progress.stop()
            self._task = None
