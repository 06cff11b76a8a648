"""One error type for every library of ours: a message a user can act on, the problems behind
it (file, line and field where there are some) and a JSON form.

The CLI turns any `PipedreamerError` into `error: …` and exit 1 (with `--output
json`, `to_dict()` on stdout); any other exception is a bug, an internal error.
Each domain has its subclass: SpecError, CompileError, LoadError, SecretsError
(engine), BuildError (builder), ClusterError (k8s), CommandError (cli).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong (or suspicious) in a workflow file."""

    file: str
    line: int | None
    field: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        """Where and what, without the severity: ``file:line: field: message``."""
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.field}:" if self.field else ""
        if not where:  # a problem of the graph, not of a place in a file
            return f"{self.field}: {self.message}" if self.field else self.message
        return f"{where}:{field} {self.message}"

    def describe(self) -> str:
        """One line of a report: ``error: `` or ``warning: ``, then where and what."""
        return f"{self.severity}: {self}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def reading_order(problems: Iterable[Problem]) -> tuple[Problem, ...]:
    """By file and line (file-wide problems first), errors before warnings on a line."""
    return tuple(sorted(problems, key=lambda p: (p.file, p.line or 0, p.severity != "error")))


class PipedreamerError(Exception):
    """An explained failure. Without a message, the problems' report is the message:
    one line per problem in reading order, each with its `error: `/`warning: ` prefix."""

    def __init__(self, message: str = "", *, problems: Iterable[Problem] = (), **details: Any):
        self.problems = reading_order(problems)
        self.details = details
        super().__init__(message or "\n".join(p.describe() for p in self.problems))

    def to_dict(self) -> dict[str, Any]:
        """`{"error": message, "problems": [...], **details}`: what `--output json` prints."""
        data: dict[str, Any] = {"error": str(self)}
        if self.problems:
            data["problems"] = [p.to_dict() for p in self.problems]
        data.update(self.details)
        return data
