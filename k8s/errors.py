"""The cluster domain's one error type."""

from __future__ import annotations

from typing import Any

from engine.errors import PipedreamerError


class ClusterError(PipedreamerError):
    """A cluster operation failed; the message names the server, resource, verb or namespace.

    `reason` is a short machine-readable cause (`unreachable`, `forbidden`,
    `unauthorized`, `not-found`, `conflict`, `invalid`, `timeout`, `config`,
    `failed`); `details` carries whatever else a JSON consumer may want.
    """

    def __init__(self, message: str, *, reason: str = "failed", **details: Any):
        super().__init__(message, **details)
        self.reason = reason

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "reason": self.reason}
