"""docs/examples/Caddyfile, run by a real Caddy in front of a real keyledger and a model API.

Skipped where caddy is not installed; CI installs it, so the documented config cannot rot. Caddy
keeps its data and config under the test's tmp dir and, with an http:// site, `admin off` and
`auto_https off`, opens no port but the gateway's and asks for no certificate.
"""

import asyncio
import os
import shutil

import pytest

from tests import gateways
from tests.gateways import GatewayChecks, running

pytestmark = pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed")


@pytest.fixture
async def gateway(tmp_path, settings, aiohttp_server, aiohttp_client):
    """`caddy run` with the documented Caddyfile."""
    log = tmp_path / "caddy.log"
    homes = {name: str(tmp_path / name) for name in ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME")}

    async def start(caddyfile):
        with log.open("wb") as output:
            return await asyncio.create_subprocess_exec(
                *("caddy", "run", "--config", str(caddyfile), "--adapter", "caddyfile"),
                stdout=output,
                stderr=output,
                env={**os.environ, **homes},
            )

    example, config = gateways.EXAMPLES / "Caddyfile", tmp_path / "Caddyfile"
    async with running(
        example, config, log.read_text, start, settings, aiohttp_server, aiohttp_client
    ) as gateway:
        yield gateway


class TestCaddy(GatewayChecks):
    account = "acct_caddy"
