"""Shared fixtures: one real server on loopback for the session (built-in scorers
plus the SDK's fakes), and clients that talk to it over gRPC."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from reward_server.embedded import EmbeddedServer
from sdk import RewardClient


@pytest.fixture(scope="session")
def server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer(
        plugins=["sdk.testing"], metrics=True, max_sample_bytes=256 * 1024, max_request_bytes=1024 * 1024
    ) as running:
        yield running


@pytest.fixture(scope="session")
def client(server: EmbeddedServer) -> Iterator[RewardClient]:
    with RewardClient(server.target, timeout=60) as c:
        yield c
