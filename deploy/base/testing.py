"""Test support: synthetic Debian packages (an `ar` archive with a data.tar.xz), no dpkg needed."""

from __future__ import annotations

import io
import lzma
import tarfile
from pathlib import Path


def make_tar(members: list[tuple[str, str, bytes | str]]) -> bytes:
    """(name, kind, data-or-link) → tar bytes; kind is file|dir|sym|hard."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
                tar.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, str(payload)
                tar.addfile(info)
            else:
                data = payload if isinstance(payload, bytes) else payload.encode()
                info.size, info.mode = len(data), 0o755 if name.endswith("bin/tool") else 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_deb(path: Path, data_tar: bytes) -> Path:
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", lzma.compress(make_tar([]))),
               ("data.tar.xz", lzma.compress(data_tar))]  # fmt: skip
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}".encode() + b"`\n" + data
        if len(data) % 2:
            out += b"\n"
    path.write_bytes(bytes(out))
    return path
