"""The cluster domain's one error type."""

from __future__ import annotations

from typing import Any


class ClusterError(Exception):
    """A cluster operation failed; the message names the server, resource, verb or namespace.

    `reason` is a short machine-readable cause (`unreachable`, `forbidden`,
    `unauthorized`, `not-found`, `conflict`, `invalid`, `timeout`, `config`,
    `failed`); `details` carries whatever else a JSON consumer may want.
    """

    def __init__(self, message: str, *, reason: str = "failed", **details: Any):
        super().__init__(message)
        self.reason = reason
        self.details = details
