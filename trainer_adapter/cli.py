"""``arbiter train`` and its stages.

Light at import (click only): ``arbiter serve`` imports this module to list the
commands, and must not pay for torch or TRL. Each stage imports its trainer when
it runs.
"""

from __future__ import annotations

import click

__all__ = ["train"]


@click.group()
def train() -> None:
    """Train a model: SFT for format, then RL against rewards served by Arbiter."""
