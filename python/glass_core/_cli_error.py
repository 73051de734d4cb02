"""The command line's user-facing error, in a module of its own so that `cli` and the command
modules it dispatches to can both raise it without importing each other."""


class CLIError(Exception):
    """A user-facing error: bad argument, bad config or missing path (exit code 2)."""
