"""Argument types shared by commands: durations, CIDRs and JSON input."""

from __future__ import annotations

import argparse
import ipaddress
import json
import pathlib
import sys
from typing import Any

from cli.errors import CommandError
from engine.spec import parse_duration


def duration(text: str) -> float:
    """argparse type: `30`, `500ms`, `30s`, `2m`, `1h` → seconds."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cidr(text: str, flag: str) -> str:
    """`flag`'s value as a normalised CIDR; a bare address is a CIDR of just itself (/32, /128).

    Raises CommandError (exit 1) naming the flag and what it expects.
    """
    value = text.strip()
    expected = f"{flag} expects an IPv4 or IPv6 CIDR such as 192.0.2.10/32 or 2001:db8::/64 (repeat the flag for several)"
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        try:
            wider = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise CommandError(f"{flag} {text!r}: not a CIDR ({exc}); {expected}") from None
        raise CommandError(
            f"{flag} {text!r}: host bits are set; write the network ({wider}) or the single address "
            f"({value.split('/')[0]}/{wider.max_prefixlen}); {expected}"
        ) from None
    return f"{network.network_address.compressed}/{network.prefixlen}"


def json_input(text: str | None) -> Any:
    """`--input` value: inline JSON, `@file` or `@-` (stdin); None when not given."""
    if text is None:
        return None
    source = "--input"
    if text.startswith("@"):
        where = text[1:]
        source = "stdin" if where == "-" else where
        try:
            text = sys.stdin.read() if where == "-" else pathlib.Path(where).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"--input {text}: cannot read {where}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(f"--input: {source} is not valid JSON: {exc}") from None
