"""docs/examples/nginx.conf, run by a real nginx in front of a real keyledger and a model API.

Skipped where nginx is not installed; CI installs it, so the documented config cannot rot.
"""

import asyncio
import shutil

import pytest

from tests import gateways
from tests.gateways import GatewayChecks, running

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")


@pytest.fixture
async def gateway(tmp_path, settings, aiohttp_server, aiohttp_client):
    """nginx with the documented server block in a minimal http {} of its own."""
    temp_paths = " ".join(
        f"{kind}_temp_path {tmp_path / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    error_log = tmp_path / "error.log"
    (tmp_path / "nginx.conf").write_text(
        f"daemon off; user root; worker_processes 1; pid {tmp_path / 'nginx.pid'};\n"
        f"error_log {error_log};\n"
        f"events {{}}\nhttp {{ access_log off; {temp_paths} include {tmp_path / 'server.conf'}; }}\n"
    )

    async def start(_server_block):
        return await asyncio.create_subprocess_exec(
            *("nginx", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path), "-e", str(error_log)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    example, config = gateways.EXAMPLES / "nginx.conf", tmp_path / "server.conf"
    async with running(
        example, config, error_log, start, settings, aiohttp_server, aiohttp_client
    ) as gateway:
        yield gateway


class TestNginx(GatewayChecks):
    account = "acct_nginx"
