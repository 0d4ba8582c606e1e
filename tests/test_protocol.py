"""The wire contract: generated code is current, and the standard gRPC health and
reflection services answer (what grpcurl and grpc_health_probe use)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from reward_server.embedded import EmbeddedServer

ROOT = Path(__file__).resolve().parent.parent


def _load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("protos_generate", ROOT / "protos" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("protos_generate", module)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    generator = _load_generator()
    for path in generator.generate(tmp_path):
        committed = ROOT / "sdk" / "_proto" / path.name
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `python protos/generate.py` and commit the result"
        )


def test_health_service_reports_serving(server: EmbeddedServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "arbiter.reward.v1.RewardService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_service(server: EmbeddedServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="arbiter.reward.v1.RewardService"),
        ]
        listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {"arbiter.reward.v1.RewardService", "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto
