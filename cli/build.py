"""`pipedreamer build [DIR]`: build the workflow's OCI image without Docker, optionally push it."""

from __future__ import annotations

import argparse
import sys

from builder.dockerfile import DOCKERFILE_NAME
from builder.oci import DEFAULT_PYTHON_VERSION
from builder.publish import publish_image, write_dockerfile
from builder.registry import Credentials
from cli.errors import CommandError
from cli.output import Output

HELP = "build the workflow's OCI image (no Docker daemon needed) and optionally push it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", nargs="?", default=".", help="workflow directory (default: .)")
    parser.add_argument("--base", help="base image: an OCI layout directory or host/repo@sha256:… (see deploy/base/)")
    parser.add_argument("--oci-layout", metavar="OUT", help="write the image as an OCI image layout to OUT")
    parser.add_argument(
        "--platform",
        action="append",
        metavar="OS/ARCH",
        help="linux/amd64 (default) or linux/arm64; repeat or comma-separate for a multi-platform index",
    )
    parser.add_argument("--push", action="store_true", help="push to --registry as {registry}/{name}:{version}")
    parser.add_argument("--insecure", action="store_true", help="allow plain HTTP to a non-loopback registry")
    parser.add_argument(
        "--username", help="registry user (default: ~/.docker/config.json or its credential helper)"
    )
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the registry password or token from stdin"
    )
    parser.add_argument(
        "--python-version", help="Python of the base when it does not say (label or usr/lib/python3.N); default 3.13"
    )
    parser.add_argument(
        "--dockerfile",
        action="store_true",
        help=f"also write {DOCKERFILE_NAME} into DIR, for people who use `docker build` "
        "(with --base: that base, if pinned by digest, and its Python)",
    )


def _credentials(args: argparse.Namespace) -> Credentials | None:
    if not args.password_stdin:
        if args.username:
            raise CommandError("--username needs --password-stdin (passwords never go on the command line)")
        return None
    secret = sys.stdin.readline().rstrip("\n")
    if not secret:
        raise CommandError("--password-stdin: nothing on stdin")
    return Credentials(username=args.username or "", password=secret) if args.username else Credentials(token=secret)


def run(args: argparse.Namespace, out: Output) -> int:
    if args.push and not args.registry:
        raise CommandError("--push needs --registry (e.g. --registry localhost:5000/team)")
    if not args.dockerfile and not args.base:
        raise CommandError("--base is required: an OCI layout directory or host/repo@sha256:… (see deploy/base/)")
    if not args.dockerfile and not (args.oci_layout or args.push):
        raise CommandError("nothing to do: give --oci-layout OUT, --push, or --dockerfile")
    credentials = _credentials(args)

    if args.dockerfile and not args.base:
        target = write_dockerfile(args.dir, None, args.python_version or DEFAULT_PYTHON_VERSION)
        out.result({"dockerfile": str(target)}, f"wrote {target}")
        return 0

    platforms = [p.strip() for value in args.platform or ["linux/amd64"] for p in value.split(",") if p.strip()]
    published = publish_image(
        args.dir,
        args.base,
        oci_layout=args.oci_layout,
        push=args.push,
        registry=args.registry or "",
        platforms=platforms,
        python_version=args.python_version,
        credentials=credentials,
        insecure=args.insecure,
        dockerfile=args.dockerfile,
        progress=out.progress,
    )
    built = published.built
    result: dict[str, object] = {"image": built.image, "digest": built.digest, "platforms": list(built.platforms)}
    lines = [f"built {built.image}@{built.digest}"]
    lines += [
        f"  {layer.name:<8} {layer.platform:<12} {layer.digest[:19]} {layer.size / 1e6:7.1f} MB"
        f"{'  (cached)' if layer.cached else ''}"
        for layer in built.layers
    ]
    lines.append(f"  image {built.image_size / 1e6:.1f} MB compressed (base {built.base_size / 1e6:.1f} MB)")
    if published.oci_layout:
        result["oci_layout"] = str(published.oci_layout)
    if published.dockerfile:
        result["dockerfile"] = str(published.dockerfile)
        lines.append(f"wrote {published.dockerfile}")
    if published.pushed:
        pushed = published.pushed
        result["pushed"] = pushed.reference
        lines.append(
            f"pushed {pushed.reference}@{pushed.digest} "
            f"({pushed.uploaded} uploaded, {pushed.mounted} mounted, {pushed.skipped} already there)"
        )
    out.result(result, "\n".join(lines))
    return 0
