"""Argument types shared by commands: durations and JSON input."""

from __future__ import annotations

import argparse
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
