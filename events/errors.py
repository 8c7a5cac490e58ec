"""What the rules refuse. The shell maps each class to an answer (service/http/errors.py)."""


class DomainError(Exception):
    """A command or report that the rules refuse; the message says what to change."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class KeyLimitReached(DomainError):
    pass


class KeyNotFound(DomainError):
    def __init__(self, message: str = "No API key with this id exists in your account."):
        super().__init__(message)


class KeyRevoked(DomainError):
    pass


class KeyExpired(DomainError):
    pass


class KeyRotated(DomainError):
    pass


class InvalidName(DomainError):
    pass


class InvalidExpiry(DomainError):
    pass


class InvalidSpendLimit(DomainError):
    pass


class KeyIdTaken(DomainError):
    pass


class UsageRejected(DomainError):
    """A well-formed report of a usage batch that the log refuses (a key it does not hold, a moment
    outside the time window): the whole batch is refused, naming its index."""

    def __init__(self, index: int, problem: str):
        super().__init__(f"events[{index}]: {problem}")
        self.index = index


class InvalidUsage(DomainError):
    """A report of a usage batch whose field is malformed: the whole batch is refused, naming the field."""

    def __init__(self, index: int, field: str, problem: str):
        super().__init__(f"events[{index}].{field}: {problem}")
        self.index = index
