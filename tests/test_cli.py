"""What `keyledger serve` prints for a newcomer: a working demo token and a curl line per action."""

import re

from service.auth import TokenVerifier
from service.cli import DEMO_ACCOUNT, _banner
from service.config import from_environment


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


def test_with_configured_secrets_nothing_secret_is_printed():
    settings = from_environment({"KEYLEDGER_JWT_SECRET": "s" * 48, "KEYLEDGER_SERVICE_TOKEN": "configured"})
    banner = _banner(settings, service_token_generated=False)
    assert "export TOKEN" not in banner and "configured" not in banner and "s" * 48 not in banner
