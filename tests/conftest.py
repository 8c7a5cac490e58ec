"""A real PostgreSQL for every integration test.

The server: KEYLEDGER_TEST_DATABASE_URL when set, else a testcontainers PostgreSQL when a Docker
engine answers, else the embedded server. Each test gets a database of its own, copied from a
template that has every migration applied.
"""

import asyncio
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from service.config import Settings
from service.http.app import create_app
from service.store import migrations
from service.store.db import with_database
from tests.helpers import CHECKPOINT_KEY, JWT_SECRET, SERVICE_TOKEN

pytest_plugins = ["tests.log_guard"]  # the session fails if a secret reaches a log

TESTS = Path(__file__).resolve().parent
FOLDER_MARKERS = ("unit", "integration", "system")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked with its folder's kind, so that `-m unit` (or `-m "not system"`) selects."""
    for item in items:
        folder = item.path.resolve().relative_to(TESTS).parts[0]
        if folder in FOLDER_MARKERS:
            item.add_marker(folder)


def _docker_answers() -> bool:
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()  # an unclosed client socket would fail a later test under filterwarnings=error
    except Exception:
        return False


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    if url := os.environ.get("KEYLEDGER_TEST_DATABASE_URL"):
        yield url
    elif _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
    else:
        from service.store.embedded import embedded_postgres

        # Not under pytest's basetemp: another pytest run on the machine prunes all but the newest
        # three of those, and would delete the data folder of a server still in use.
        with tempfile.TemporaryDirectory(prefix="keyledger-test-pg-") as folder:
            with embedded_postgres(Path(folder)) as url:
                yield url


async def _admin(server_url: str, *statements: str) -> None:
    connection = await asyncpg.connect(server_url)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def template_database(server_url) -> Iterator[str]:
    name = f"keyledger_template_{secrets.token_hex(4)}"
    asyncio.run(_admin(server_url, f"CREATE DATABASE {name}"))
    asyncio.run(migrations.migrate(with_database(server_url, name)))
    yield name
    asyncio.run(_admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def empty_database_url(server_url) -> Iterator[str]:
    """A database of its own with no migration applied, dropped afterwards."""
    name = f"keyledger_empty_{secrets.token_hex(6)}"
    asyncio.run(_admin(server_url, f"CREATE DATABASE {name}"))
    yield with_database(server_url, name)
    asyncio.run(_admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
async def database_url(server_url, template_database) -> str:
    """A fresh, fully migrated database for one test, dropped afterwards."""
    name = f"keyledger_test_{secrets.token_hex(6)}"
    await _admin(server_url, f"CREATE DATABASE {name} TEMPLATE {template_database}")
    yield with_database(server_url, name)
    await _admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def admin(database_url) -> asyncpg.Connection:
    """A connection as the database owner, for assertions that look behind the service's back."""
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
def settings(database_url) -> Settings:
    # checkpoint_interval 0: the tree writer signs each batch, so settle() sees no checkpoint pending
    return Settings(
        database_url=database_url,
        jwt_secret=JWT_SECRET,
        service_token=SERVICE_TOKEN,
        checkpoint_key=CHECKPOINT_KEY,
        checkpoint_interval=0,
    )


@pytest.fixture
async def client(aiohttp_client, settings):
    return await aiohttp_client(create_app(settings))
