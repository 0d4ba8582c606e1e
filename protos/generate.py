"""Regenerate the Python modules for the wire contract.

Run from anywhere: ``python protos/generate.py [OUT_DIR]`` (default: ``sdk/_proto``).
The output is deterministic, so a test regenerates into a temporary folder and fails
when the committed modules differ (stale code is a silent protocol mismatch).

protoc writes ``from arbiter.reward.v1 import reward_pb2`` into the gRPC module, which
only works with the proto root on ``sys.path``; we rewrite that one import to a relative
one so the modules live inside the ``sdk`` package without a top-level ``arbiter``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PROTO_FILE = "arbiter/reward/v1/reward.proto"
DEFAULT_OUT = PROTO_ROOT.parent / "sdk" / "_proto"
GENERATED_NAMES = ("reward_pb2.py", "reward_pb2.pyi", "reward_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Generate the modules into ``out_dir`` and return their paths."""
    import grpc_tools  # dev dependency: only needed to regenerate
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        code = protoc.main(
            [
                "protoc",
                f"-I{PROTO_ROOT}",
                f"-I{well_known}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                str(PROTO_ROOT / PROTO_FILE),
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code}")
        produced = Path(tmp) / Path(PROTO_FILE).parent
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in GENERATED_NAMES:
            text = (produced / name).read_text()
            text = text.replace("from arbiter.reward.v1 import reward_pb2", "from . import reward_pb2")
            target = out_dir / name
            target.write_text(text)
            written.append(target)
    return written


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for path in generate(out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
