"""Every refusal has its own answer: a new error class cannot fall through to a 500 or an ancestor's."""

import pytest

import service.http.app  # noqa: F401 (imports every module of the service, so every error class exists)
from events.errors import DomainError, InvalidName, InvalidUsage, UsageRejected
from service.app.errors import AppError, MomentInFuture
from service.http.errors import ANSWERS


def subclasses(root: type) -> set[type]:
    found = set()
    for child in root.__subclasses__():
        found |= {child, *subclasses(child)}
    return found


REFUSALS = sorted(subclasses(DomainError) | subclasses(AppError), key=lambda cls: cls.__qualname__)


def test_the_walk_finds_the_refusals_of_both_layers():
    assert {InvalidName, UsageRejected, InvalidUsage, MomentInFuture} <= set(REFUSALS)


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda cls: cls.__qualname__)
def test_every_refusal_has_an_answer(refusal):
    assert refusal in ANSWERS, f"{refusal.__module__}.{refusal.__qualname__} has no entry in ANSWERS"
    status, type_ = ANSWERS[refusal]
    assert 400 <= status < 600 and type_


# SPEC "Errors": 400 for a request that breaks a rule of the API, 422 only for one the log refuses.
@pytest.mark.parametrize(
    ("refusal", "answer"),
    [
        (InvalidName, (400, "invalid_request")),
        (InvalidUsage, (400, "invalid_request")),
        (UsageRejected, (422, "unprocessable")),
        (MomentInFuture, (422, "unprocessable")),
    ],
)
def test_malformed_input_is_400_and_a_refusal_of_the_log_422(refusal, answer):
    assert ANSWERS[refusal] == answer
