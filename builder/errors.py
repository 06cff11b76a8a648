"""The build domain's one error type."""

from engine.errors import PipedreamerError


class BuildError(PipedreamerError):
    """A build, base, layout or push problem; the message names the file, flag or registry."""
