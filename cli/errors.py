"""The CLI's own error: bad arguments it can explain beyond argparse."""

from engine.errors import PipedreamerError


class CommandError(PipedreamerError):
    """A command cannot do what was asked; the message says why and what to do."""
