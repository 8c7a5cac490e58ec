"""/openapi.json: an OpenAPI 3.1 document that describes every route the app serves, and nothing else."""

import re

import msgspec
import pytest
from schemathesis.openapi import from_dict

from service.config import Settings
from service.http import responses
from service.http.app import create_app
from service.http.openapi import OPERATIONS, document
from tests.helpers import KEYS, SERVICE_TOKEN, auth, create_key, expect, expect_error

pytestmark = pytest.mark.server_independent  # HTTP parsing and our code: CI's second pass leaves it out


def served_routes() -> set[tuple[str, str]]:
    app = create_app(Settings(database_url="postgresql://unused"))
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method not in ("HEAD", "OPTIONS")  # aiohttp adds HEAD to every GET
    }


def described_routes(openapi: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in openapi["paths"].items() for method in item}


def test_every_served_route_is_described_and_every_described_route_is_served():
    openapi = document()
    assert served_routes() - described_routes(openapi) == set(), "routes missing from /openapi.json"
    assert described_routes(openapi) - served_routes() == set(), "/openapi.json describes routes not served"


def test_the_document_is_valid_openapi_3_1():
    openapi = document()
    assert openapi["openapi"].startswith("3.1")
    from_dict(openapi).validate()  # schemathesis checks it against the OpenAPI 3.1 meta-schema
    references = set(re.findall(r'"#/components/schemas/(\w+)"', msgspec.json.encode(openapi).decode()))
    assert references <= set(openapi["components"]["schemas"]), "a $ref points nowhere"


def test_every_operation_names_its_security_its_errors_and_the_envelope():
    openapi = document()
    schemes = set(openapi["components"]["securitySchemes"])
    assert schemes == {"accountJwt", "apiKey", "serviceToken"}
    for operation in OPERATIONS:
        described = openapi["paths"][operation.path][operation.method]
        for requirement in described.get("security", []):
            assert set(requirement) <= schemes
        for status, answer in described["responses"].items():
            if int(status) >= 400:
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, (operation.path, status)
        if operation.security:
            assert "401" in described["responses"], operation.path


def test_malformed_input_is_documented_as_400_and_only_refusals_of_the_log_as_422():
    """SPEC "Errors": a body or parameter that breaks a rule is 400; 422 is only a well-formed usage
    event the log refuses (unknown key, time window) and a key list as_of in the future."""
    openapi = document()
    documented_422 = set()
    for operation in OPERATIONS:
        answers = openapi["paths"][operation.path][operation.method]["responses"]
        if "422" in answers:
            documented_422.add((operation.method, operation.path))
        if operation.body is not None or any(p["in"] == "query" for p in operation.parameters):
            assert "400" in answers, (operation.method, operation.path)
    assert documented_422 == {("post", "/api/v1/usage/"), ("get", f"{KEYS}/")}
    usage = openapi["paths"]["/api/v1/usage/"]["post"]["responses"]
    assert "cost_chf" in usage["400"]["description"] and "key" in usage["422"]["description"]
    assert "as_of" in openapi["paths"][f"{KEYS}/"]["get"]["responses"]["422"]["description"]


@pytest.mark.parametrize("path", ["/api/v1/usage/", KEYS + "/create/"])
def test_request_bodies_are_the_structs_the_handlers_decode(path):
    operation = document()["paths"][path]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["$ref"].rsplit("/", 1)[1] in {
        "UsageBatch",
        "CreateKeyBody",
        "UpdateKeyBody",
        "RotateKeyBody",
    }


async def test_the_service_serves_the_document(client):
    answer = await expect(await client.get("/openapi.json"))
    assert answer == msgspec.json.decode(msgspec.json.encode(document()))
    assert set(answer["paths"]) >= {f"{KEYS}/create/", "/api/v1/auth/verify", "/metrics"}


async def test_an_unknown_path_points_to_the_document(client):
    message = await expect_error(await client.get("/api/v1/nothing-here"), 404, "not_found")
    assert "/openapi.json" in message


async def test_answers_decode_into_the_documented_structs(client, admin):
    """The handlers encode the structs the document is generated from; check one of each shape."""

    created = await create_key(client, "acct_openapi")
    msgspec.convert(created, responses.CreatedKey)
    listed = await expect(await client.get(f"{KEYS}/", headers=auth("acct_openapi")))
    msgspec.convert(listed, responses.KeyList)
    history = await expect(await client.get(f"{KEYS}/{created['id']}/events/", headers=auth("acct_openapi")))
    msgspec.convert(history, responses.KeyHistory)
    page = await expect(
        await client.get("/api/v1/audit/events", headers={"Authorization": f"Bearer {SERVICE_TOKEN}"})
    )
    msgspec.convert(page, responses.AuditPage)


async def test_get_on_the_create_path_is_a_wrong_method_not_a_key_lookup(client):
    response = await client.get(f"{KEYS}/create/", headers=auth("acct_openapi"))
    await expect_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "POST"
