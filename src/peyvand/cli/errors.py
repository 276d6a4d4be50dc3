"""The one error a command raises to stop with a message and a non-zero exit status."""


class CommandError(Exception):
    """The command cannot go on; ``str(error)`` is shown to the operator as is."""
