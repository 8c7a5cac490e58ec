"""Settings from the environment: a malformed number stops keyledger with one line naming the variable."""

import pytest

from service import cli
from service.config import ConfigError, from_environment


def test_numbers_are_read_and_unset_or_empty_ones_take_their_defaults():
    settings = from_environment({"KEYLEDGER_PORT": "8123", "KEYLEDGER_POOL_MAX_SIZE": "3"})
    assert (settings.port, settings.pool_max_size) == (8123, 3)
    assert (from_environment({}).port, from_environment({}).pool_max_size) == (8080, 10)
    empty = from_environment({"KEYLEDGER_PORT": "", "KEYLEDGER_POOL_MAX_SIZE": ""})
    assert (empty.port, empty.pool_max_size) == (8080, 10)
    assert from_environment({"KEYLEDGER_PORT": "1"}).port == 1
    assert from_environment({"KEYLEDGER_PORT": "65535"}).port == 65535


@pytest.mark.parametrize(
    "value", ["abc", "0", "-1", "70000", "65536", "80.0", " 8080", "8_080", "\uff19", "9" * 5000]
)
def test_a_port_that_is_not_one_names_the_variable_and_the_range(value):
    with pytest.raises(ConfigError) as refused:
        from_environment({"KEYLEDGER_PORT": value})
    assert str(refused.value) == (
        f"KEYLEDGER_PORT={value!r} must be a whole number from 1 to 65535 (unset, it is 8080)."
    )


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5"])
def test_a_pool_size_below_one_or_not_a_number_names_the_variable(value):
    with pytest.raises(ConfigError) as refused:
        from_environment({"KEYLEDGER_POOL_MAX_SIZE": value})
    assert str(refused.value) == (
        f"KEYLEDGER_POOL_MAX_SIZE={value!r} must be a whole number 1 or more (unset, it is 10)."
    )


def test_every_command_reading_settings_refuses_with_one_line_and_status_2(monkeypatch, capsys):
    monkeypatch.setenv("KEYLEDGER_POOL_MAX_SIZE", "0")
    for command in (["migrate"], ["serve"], ["token", "--account", "acct_x"], ["export"]):
        assert cli.main(command) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert (
            err
            == f"keyledger {command[0]}: KEYLEDGER_POOL_MAX_SIZE='0' must be a whole number 1 or more (unset, it is 10).\n"
        )


def test_a_refusal_of_a_command_is_one_line_and_status_2(monkeypatch, capsys):
    monkeypatch.delenv("KEYLEDGER_JWT_SECRET", raising=False)
    monkeypatch.delenv("KEYLEDGER_JWT_PUBLIC_KEY", raising=False)
    assert cli.main(["token", "--account", "acct_x"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert (
        err == "keyledger token: set KEYLEDGER_JWT_SECRET to the secret the service uses; tokens need it.\n"
    )
