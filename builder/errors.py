"""The build domain's one error type."""


class BuildError(Exception):
    """A build, base, layout or push problem; the message names the file, flag or registry."""
