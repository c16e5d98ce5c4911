"""Errors the engine raises on purpose.

`UserError` means the upload or the spec is wrong: the job fails at once with `code` and
`message` shown to the user, and no retry will help. `Cancelled` means the user asked to stop.
"""

from core.errors import ErrorCode


class UserError(Exception):
    """A problem the user can fix; ``code`` is one of the catalogue's (``core.errors``)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Cancelled(Exception):
    """The job was cancelled while it ran."""
