"""Errors the engine raises on purpose.

`UserError` means the upload or the spec is wrong: the job fails at once with `code` and
`message` shown to the user, and no retry will help. `Stopped` means the worker
asked the run to stop (a cancel, or a shutdown): it stopped after a checkpoint.
"""

from core.errors import ErrorCode


class UserError(Exception):
    """A problem the user can fix; ``code`` is one of the catalogue's (``core.errors``)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Stopped(Exception):
    """The run stopped at the worker's request, after a checkpoint; the worker knows why."""
