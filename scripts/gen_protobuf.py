#!/usr/bin/env python3
"""Regenerate geecache/geecachepb/geecache_pb2.py and its type stub geecache_pb2.pyi from geecache.proto.

    python scripts/gen_protobuf.py

protoc (grpcio-tools) writes a module that refuses any protobuf runtime older
than the protoc that made it (``ValidateProtobufRuntimeVersion``, protobuf
5.26 on), which would make the newest protoc the package's floor.  The module
is otherwise the same for every runtime from 4.21 on, so the check (and its
import, absent before 5.26) is taken out: the module then loads on protobuf
4.21 through 7, and the package's floor is aetcd's (5.27.2, whose own generated
modules carry the check).

The stub (protoc's ``--pyi_out``) is what mypy reads for the module: the
messages are built at import from the serialized descriptor, so the module
itself names none of them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PB_DIR = ROOT / "geecache" / "geecachepb"

_CHECK = re.compile(r"^from google\.protobuf import runtime_version as _runtime_version\n"
                    r"|^_runtime_version\.ValidateProtobufRuntimeVersion\(\n(?:.*\n)*?\)\n", re.MULTILINE)


def strip_runtime_check(text: str) -> str:
    """protoc's module without its runtime-version check."""
    return _CHECK.sub("", text)


def generate_files() -> dict[str, str]:
    """File name -> text of the module and its stub as this script commits them, generated now."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PB_DIR}", f"--python_out={out}",
                        f"--pyi_out={out}", str(PB_DIR / "geecache.proto")], check=True, timeout=60)
        return {"geecache_pb2.py": strip_runtime_check((Path(out) / "geecache_pb2.py").read_text()),
                "geecache_pb2.pyi": (Path(out) / "geecache_pb2.pyi").read_text()}


def generate() -> str:
    """The module as this script commits it, generated now."""
    return generate_files()["geecache_pb2.py"]


if __name__ == "__main__":
    for name, text in generate_files().items():
        (PB_DIR / name).write_text(text)
