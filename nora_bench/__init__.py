"""nora-bench: a benchmark harness for vision-language-action robot policies."""

__version__ = "0.1.0"


class UserError(Exception):
    """A mistake the user can fix; the CLI prints its message as one line, no traceback."""
