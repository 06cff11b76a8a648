"""The CLI's own error: bad arguments it can explain beyond argparse."""


class CommandError(Exception):
    """A command cannot do what was asked; the message says why and what to do."""
