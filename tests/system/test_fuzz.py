"""Fuzzing from the contract: schemathesis generates requests from /openapi.json, valid and invalid, and
sends them to a real `keyledger serve` process. Every answer must be documented (status, content type,
headers, body schema), never a 5xx, and every error the envelope (the document says so for each one).

KEYLEDGER_FUZZ_EXAMPLES bounds the examples per operation (CI keeps the default, so it takes minutes).
"""

import os

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.http.openapi import document
from tests.helpers import SERVICE_TOKEN, token_for
from tests.processes import activate_subscription, running_service

EXAMPLES = int(os.environ.get("KEYLEDGER_FUZZ_EXAMPLES", "30"))
# Requests that can be valid by shape and still be refused with a documented 4xx, by a rule the document
# states in words: a usage event for an unknown key or outside the time window (422) or with a cost_chf
# that is not a decimal string (400), a time-travel moment in the future (422), a key name that is blank
# once trimmed or holds a control character (400), an expires_at in the past (400), a grace period
# written as 604800.0 (JSON Schema's integer admits it; the API takes whole numbers written as such).
SHAPE_IS_NOT_ENOUGH = {
    ("POST", "/api/v1/usage/"),
    ("GET", "/api/v1/accounts/user/api-keys/"),
    ("POST", "/api/v1/accounts/user/api-keys/create/"),
    ("PATCH", "/api/v1/accounts/user/api-keys/{key_id}/update/"),
    ("POST", "/api/v1/accounts/user/api-keys/{key_id}/rotate/"),
    # a size within the schema may still be beyond the log (400, SPEC) or one never checkpointed (404)
    ("GET", "/api/v1/audit/checkpoint"),
    ("GET", "/api/v1/audit/proof/inclusion"),
    ("GET", "/api/v1/audit/proof/consistency"),
}
ACCOUNT = "acct_fuzz"


@pytest.fixture(scope="module")
def service(server_url, template_database):
    with running_service(server_url, template_database) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def credentials(service) -> dict[str, str]:
    """A JWT, a valid key of a subscribed account, and the service token: one per security scheme."""
    session = requests.Session()
    jwt = token_for(ACCOUNT, roles=["auditor"])
    created = session.post(
        f"{service}/api/v1/accounts/user/api-keys/create/",
        json={"name": "fuzzed"},
        headers={"Authorization": f"Bearer {jwt}"},
        timeout=10,
    )
    created.raise_for_status()
    activate_subscription(service, ACCOUNT)
    return {"accountJwt": jwt, "apiKey": created.json()["key"], "serviceToken": SERVICE_TOKEN}


# The document the service serves (tests/test_openapi.py checks they are the same), loaded without a
# server so pytest can collect one test per operation; the requests go to the real process.
schema = schemathesis.openapi.from_dict(document())


@schema.parametrize()
@hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    database=None,  # no example database in the working tree
)
def test_every_answer_conforms_to_the_contract(case, credentials, service):
    requirements = case.operation.definition.raw.get("security", [])
    headers = {}
    if requirements:
        [scheme] = requirements[0]  # the first alternative the operation accepts
        headers["Authorization"] = f"Bearer {credentials[scheme]}"
    excluded = [positive_data_acceptance] if (case.method, case.path) in SHAPE_IS_NOT_ENOUGH else []
    case.call_and_validate(base_url=service, headers=headers, excluded_checks=excluded, timeout=10)
