"""What the application refuses or cannot do right now, apart from the domain's rules (events.errors).

The HTTP shell maps each class to an answer (service/http/errors.py); nothing here knows HTTP.
"""


class AppError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Contention(AppError):
    """Too many writers changed one account at the same moment: the command was not applied."""


class MomentInFuture(AppError):
    """A question about a moment the log has not reached yet: its answer could still change."""


class TreeBehind(AppError):
    """The Merkle tree's writer has not folded in the events asked about yet (it does within a second)."""
