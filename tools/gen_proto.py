"""Generates the Python protobuf and gRPC modules from proto/ with grpcio-tools.

The plain-Python path runs this at setup (tools/venv.sh); Bazel runs the same
script as an action (//proto/pipedreamer/v1:py_codegen), so no C++ gRPC plugin
is ever built.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.resources
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto" / "pipedreamer" / "v1"
STAMP = PROTO_DIR / ".generated"


def generate(protos: list[str], out_dir: pathlib.Path, proto_root: pathlib.Path) -> None:
    """Runs protoc on `protos` (paths relative to proto_root), writing under out_dir."""
    from grpc_tools import protoc

    include = str(importlib.resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {', '.join(protos)}")


def _fingerprint(protos: list[pathlib.Path]) -> str:
    digest = hashlib.sha256(importlib.metadata.version("grpcio-tools").encode())
    for proto in protos:
        digest.update(proto.name.encode() + b"\0" + proto.read_bytes())
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("protos", nargs="*", help="proto files relative to --proto-root (default: proto/pipedreamer/v1/*.proto)")
    parser.add_argument("--out", type=pathlib.Path, help="output root (default: the repository, in place)")
    parser.add_argument("--proto-root", type=pathlib.Path, default=pathlib.Path("."), help="import root for explicit protos")
    parser.add_argument("--if-stale", action="store_true", help="in-place mode: skip when nothing changed")
    args = parser.parse_args()
    if args.protos:
        generate(args.protos, args.out or pathlib.Path("."), args.proto_root)
        return 0
    protos = sorted(PROTO_DIR.glob("*.proto"))
    fingerprint = _fingerprint(protos)
    if args.if_stale and STAMP.exists() and STAMP.read_text() == fingerprint:
        return 0
    generate([str(p.relative_to(ROOT)) for p in protos], args.out or ROOT, ROOT)
    if args.out is None:
        STAMP.write_text(fingerprint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
