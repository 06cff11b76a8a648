"""How commands print: text for people, one JSON document for machines."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO


SEVERITY_PREFIXES = ("error: ", "warning: ")


def is_report(message: str) -> bool:
    """Whether every line of `message` starts with a severity prefix."""
    lines = message.splitlines()
    return bool(lines) and all(line.startswith(SEVERITY_PREFIXES) for line in lines)


class Output:
    """Commands print only through this, so `--output json` stays one document."""

    def __init__(self, fmt: str = "text", stdout: TextIO | None = None, stderr: TextIO | None = None):
        self.format = fmt
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr

    @property
    def json(self) -> bool:
        return self.format == "json"

    @property
    def interactive(self) -> bool:
        """True when progress may be drawn: a terminal, and not JSON."""
        return not self.json and self.stderr.isatty()

    def result(self, data: Any, text: str | None = None) -> None:
        """The command's result: `data` as JSON, or `text` (default: str(data))."""
        if self.json:
            self.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        else:
            out = text if text is not None else str(data)
            self.stdout.write(out if out.endswith("\n") or not out else out + "\n")
        self.stdout.flush()

    def line(self, text: str) -> None:
        """One line of a result that arrives piece by piece (a watched run); silent in JSON mode."""
        if not self.json:
            self.stdout.write(text + "\n")
            self.stdout.flush()

    def info(self, message: str) -> None:
        """Human-oriented side notes; silent in JSON mode."""
        if not self.json:
            self.stderr.write(message + "\n")
            self.stderr.flush()

    def progress(self, message: str) -> None:
        """Progress on a terminal only."""
        if self.interactive:
            self.stderr.write(message + "\n")
            self.stderr.flush()

    def warning(self, message: str) -> None:
        self.stderr.write(f"warning: {message}\n")
        self.stderr.flush()

    def error(self, message: str, details: dict[str, Any] | None = None) -> None:
        """`error: message` on stderr; in JSON mode also {"error": message, **details} on stdout.

        A message that is already a report (every line starts with its own
        `error: ` or `warning: `, as a SpecError lists its problems) is printed
        as it is, so no line carries two prefixes.
        """
        self.stderr.write((message if is_report(message) else f"error: {message}") + "\n")
        self.stderr.flush()
        if self.json:
            doc = {"error": message}
            doc.update(details or {})
            self.stdout.write(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
            self.stdout.flush()
