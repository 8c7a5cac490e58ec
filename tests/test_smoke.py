from tests.conftest import auth

BASE = "/api/v1/accounts/user/api-keys"


async def test_create_then_list(client):
    created = await client.post(f"{BASE}/create/", json={"name": "Local dev"}, headers=auth("acct_1"))
    assert created.status == 201
    listed = await (await client.get(f"{BASE}/", headers=auth("acct_1"))).json()
    assert [key["name"] for key in listed["data"]] == ["Local dev"]
