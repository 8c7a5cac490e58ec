"""The wheel works on its own: built from this checkout and installed into a fresh venv outside it,
`keyledger migrate` creates the tables on an empty database (the migrations are package data), and
`keyledger serve` answers /readyz and serves the dashboard page from the package."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
import requests

from tests.helpers import JWT_SECRET, SERVICE_TOKEN
from tests.processes import ROOT, free_port, wait_until_ready


def run(*command, cwd: Path, env: dict[str, str] | None = None) -> str:
    finished = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, f"{command} failed:\n{finished.stdout}\n{finished.stderr}"
    return finished.stdout


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """A folder outside the checkout: the venv lives there and every command runs there."""
    folder = tmp_path_factory.mktemp("wheel")
    assert not folder.resolve().is_relative_to(ROOT)
    return folder


@pytest.fixture(scope="module")
def venv(outside) -> Path:
    """A fresh venv with the wheel of this checkout and its runtime dependencies (pip's cache makes
    it quick): the checkout's pip installs into it, so the venv needs no pip of its own."""
    pip = (sys.executable, "-m", "pip")
    run(*pip, "wheel", "--no-deps", "--quiet", "--wheel-dir", outside / "dist", ROOT, cwd=outside)
    [wheel] = (outside / "dist").glob("keyledger-*.whl")
    run(sys.executable, "-m", "venv", "--without-pip", outside / "venv", cwd=outside)
    run(*pip, "--python", outside / "venv/bin/python", "install", "--quiet", wheel, cwd=outside)
    return outside / "venv"


def environment(**variables: str) -> dict[str, str]:
    """The caller's environment without what would point keyledger at the checkout or configure it."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("KEYLEDGER_") and name not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    return kept | variables


def test_the_installed_package_is_the_wheel_not_the_checkout(venv, outside):
    where = run(
        venv / "bin/python",
        "-c",
        "import service, sql; print(service.__file__, sql.__file__)",
        cwd=outside,
        env=environment(),
    )
    for module in where.split():
        assert Path(module).is_relative_to(venv), where


async def _has_table(database_url: str, table: str) -> bool:
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
    finally:
        await connection.close()


def test_the_wheel_migrates_an_empty_database_and_serves(venv, outside, empty_database_url):
    configured = environment(
        KEYLEDGER_DATABASE_URL=empty_database_url,
        KEYLEDGER_JWT_SECRET=JWT_SECRET,
        KEYLEDGER_SERVICE_TOKEN=SERVICE_TOKEN,
    )
    shipped = sorted(path.name for path in (ROOT / "sql").glob("*.sql"))
    migrated = run(venv / "bin/keyledger", "migrate", cwd=outside, env=configured)
    assert migrated == f"Applied: {', '.join(shipped)}\n"
    assert shipped[:5] == [
        "001_events.sql",
        "002_api_keys.sql",
        "003_usage.sql",
        "004_audit_chain.sql",
        "005_analytics.sql",
    ]
    assert asyncio.run(_has_table(empty_database_url, "public.events"))

    port = free_port()
    with (outside / "serve.log").open("wb") as log:
        service = subprocess.Popen(
            [venv / "bin/keyledger", "serve", "--port", str(port)],
            cwd=outside,
            env=configured,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_until_ready(base_url, service)  # /readyz answers 200
            page = requests.get(f"{base_url}/", timeout=10)
            assert page.status_code == 200 and "<title>API Keys · keyledger</title>" in page.text
            script = requests.get(f"{base_url}/dashboard/dashboard.js", timeout=10)
            assert (
                script.status_code == 200
                and script.text == (ROOT / "service/http/dashboard/dashboard.js").read_text()
            )
            service.send_signal(signal.SIGTERM)
            assert service.wait(timeout=30) == 0, (outside / "serve.log").read_text()
        finally:
            if service.poll() is None:
                service.kill()
                service.wait(10)
