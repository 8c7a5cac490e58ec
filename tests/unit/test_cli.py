"""What `keyledger serve` prints for a newcomer: the dashboard link, a working demo token and a curl
line per action."""

import re
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from service.cli import build_parser
from service.cli.serve import DEMO_ACCOUNT, _banner
from service.config import from_environment
from service.http.auth import TokenVerifier


def test_the_development_banner_has_a_valid_demo_token_and_every_curl_line():
    settings = from_environment({})
    banner = _banner(settings, service_token_generated=True)
    [token] = re.findall(r"export TOKEN=(\S+)", banner)
    assert TokenVerifier(settings).verify(token).account_id == DEMO_ACCOUNT
    assert settings.service_token in banner
    for line in (
        "-X POST http://127.0.0.1:8080/api/v1/accounts/user/api-keys/create/",
        "curl -s http://127.0.0.1:8080/api/v1/accounts/user/api-keys/ ",
        "curl -s http://127.0.0.1:8080/api/v1/accounts/user/api-keys/$KEY_ID/ ",
        "-X PATCH http://127.0.0.1:8080/api/v1/accounts/user/api-keys/$KEY_ID/update/",
        "-X POST http://127.0.0.1:8080/api/v1/accounts/user/api-keys/$KEY_ID/revoke/",
        "http://127.0.0.1:8080/api/v1/accounts/user/api-keys/$KEY_ID/events/",
        "http://127.0.0.1:8080/api/v1/auth/verify",
    ):
        assert line in banner, line


def test_the_development_banner_links_to_the_dashboard_signed_in_with_the_same_token():
    settings = from_environment({"KEYLEDGER_HOST": "127.0.0.1", "KEYLEDGER_PORT": "8123"})
    banner = _banner(settings, service_token_generated=True)
    [token] = re.findall(r"export TOKEN=(\S+)", banner)
    [link] = re.findall(r"^Open the dashboard: (\S+)$", banner, re.MULTILINE)
    url = urlsplit(link)
    # The page at / (tests/test_dashboard_http.py) reads the token from the fragment, which a browser
    # never sends to the server: the path is the page, the fragment is exactly `token=<the JWT>`.
    assert (url.scheme, url.netloc, url.path, url.query) == ("http", "127.0.0.1:8123", "/", "")
    assert url.fragment == f"token={token}"
    assert TokenVerifier(settings).verify(url.fragment.removeprefix("token=")).account_id == DEMO_ACCOUNT


def test_with_configured_secrets_nothing_secret_is_printed():
    settings = from_environment({"KEYLEDGER_JWT_SECRET": "s" * 48, "KEYLEDGER_SERVICE_TOKEN": "configured"})
    banner = _banner(settings, service_token_generated=False)
    assert "export TOKEN" not in banner and "configured" not in banner and "s" * 48 not in banner
    assert "#token=" not in banner and "eyJ" not in banner
    assert "Open the dashboard: http://127.0.0.1:8080/ " in banner


@pytest.mark.parametrize("port", ["0", "65536", "99999", "-1", "abc", "8080x", " 8080", "8_080"])
def test_serve_refuses_a_port_out_of_range_before_it_starts_anything(port, capsys):
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(["serve", "--port", port])
    assert refused.value.code == 2
    assert (
        f"argument --port: {port!r} is not a port: a whole number from 1 to 65535" in capsys.readouterr().err
    )


@pytest.mark.parametrize("port", ["1", "8080", "65535"])
def test_serve_takes_a_port_in_range(port):
    assert build_parser().parse_args(["serve", "--port", port]).port == int(port)


def test_the_command_line_loads_rich_only_for_replay():
    """rich costs every process 2 MB (bench/memory.py measures a serving process): only replay's
    progress bar imports it."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, service.cli.serve; print('rich' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "False"
