"""Settings, read from the environment once at start-up."""

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

# What a browser sends in `Origin`: lower-case scheme and host, the port only when it is not the default.
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_ORIGIN = re.compile(
    rf"(?P<scheme>https?)://(?P<host>{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::(?P<port>[1-9][0-9]{{0,4}}))?"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ConfigError(SystemExit):
    """A setting in the environment cannot be used: `keyledger` stops with this message, no traceback."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None  # None: start the embedded PostgreSQL under data_dir
    data_dir: Path = Path(".keyledger")
    host: str = "127.0.0.1"
    port: int = 8080
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    service_token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    pool_max_size: int = 10
    development: bool = False  # no JWT key configured: a random secret was made, demo tokens are printed
    dashboard_origin: str | None = None  # the one origin allowed to call the API from a browser (CORS)
    # GitHub's secret-scanning public keys by identifier; None: unset, every report is refused
    secret_scanning_keys: Mapping[str, ec.EllipticCurvePublicKey] | None = None
    # The checkpoints' note signer key (PRIVATE+KEY+…); None: the app makes one for its lifetime, and
    # `keyledger serve` one kept under data_dir (service/cli/checkpoints.py).
    checkpoint_key: str | None = field(default=None, repr=False)
    log_origin: str = "keyledger.local/log"
    checkpoint_interval: float = 10.0  # seconds; at least this often a checkpoint while the log grows

    def __post_init__(self):
        if self.dashboard_origin is not None:
            check_origin(self.dashboard_origin)

    def __repr__(self) -> str:  # never print secrets by accident
        return f"Settings(host={self.host!r}, port={self.port}, embedded={self.database_url is None})"


def check_origin(origin: str) -> str:
    """The origin itself when it is exactly what a browser sends in `Origin`; else a ConfigError that
    says what to write instead (a browser never sends a path, a trailing slash or a default port, so
    such a value would silently match nothing)."""
    if _is_origin(origin):
        return origin
    raise ConfigError(
        f"KEYLEDGER_DASHBOARD_ORIGIN={origin!r} is not an origin. Write it as a browser sends it, "
        "http(s)://host[:port] in lower case, without a path, a trailing slash or the default port: "
        f"e.g. https://dashboard.example.com.{_suggestion(origin)}"
    )


def _is_origin(text: str) -> bool:
    match = _ORIGIN.fullmatch(text)
    if match is None:
        return False
    port = match["port"]
    return port is None or (int(port) <= 65535 and int(port) != _DEFAULT_PORTS[match["scheme"]])


def _suggestion(origin: str) -> str:
    """` Did you mean …?` with the origin of a URL that is not one, when there is one."""
    try:
        parts = urlsplit(origin.strip())
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        return ""
    if scheme not in _DEFAULT_PORTS or not host:
        return ""
    host = f"[{host}]" if ":" in host else host
    candidate = f"{scheme}://{host}" + ("" if port in (None, _DEFAULT_PORTS[scheme]) else f":{port}")
    return f" Did you mean {candidate}?" if _is_origin(candidate) else ""


def from_environment(environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    public_key = env.get("KEYLEDGER_JWT_PUBLIC_KEY") or None
    secret = env.get("KEYLEDGER_JWT_SECRET") or None
    development = secret is None and public_key is None
    if development:
        secret = secrets.token_urlsafe(48)
    return Settings(
        database_url=env.get("KEYLEDGER_DATABASE_URL") or None,
        data_dir=Path(env.get("KEYLEDGER_DATA_DIR", ".keyledger")),
        host=env.get("KEYLEDGER_HOST", "127.0.0.1"),
        port=_whole_number(env, "KEYLEDGER_PORT", default=8080, lowest=1, highest=65535),
        jwt_secret=secret,
        jwt_public_key=public_key,
        jwt_issuer=env.get("KEYLEDGER_JWT_ISSUER") or None,
        jwt_audience=env.get("KEYLEDGER_JWT_AUDIENCE") or None,
        service_token=env.get("KEYLEDGER_SERVICE_TOKEN") or secrets.token_urlsafe(32),
        pool_max_size=_whole_number(env, "KEYLEDGER_POOL_MAX_SIZE", default=10, lowest=1),
        development=development,
        dashboard_origin=env.get("KEYLEDGER_DASHBOARD_ORIGIN") or None,
        secret_scanning_keys=read_secret_scanning_keys(env.get(SECRET_SCANNING_KEYS) or None),
        checkpoint_key=env.get("KEYLEDGER_CHECKPOINT_KEY") or None,
        log_origin=env.get("KEYLEDGER_LOG_ORIGIN") or "keyledger.local/log",
        checkpoint_interval=float(
            _whole_number(env, "KEYLEDGER_CHECKPOINT_INTERVAL", default=10, lowest=0, highest=10)
        ),
    )


def _whole_number(env, name: str, *, default: int, lowest: int, highest: int | None = None) -> int:
    """The number in the variable `name` (unset or empty: `default`); else a ConfigError that says
    what to write. Only digits (int() also takes " 8080" and "8_080"), at most 9 (it refuses 5000)."""
    text = env.get(name) or ""
    if not text:
        return default
    if text.isascii() and text.isdigit() and len(text) < 10:
        number = int(text)
        if number >= lowest and (highest is None or number <= highest):
            return number
    bounds = f"from {lowest} to {highest}" if highest else f"{lowest} or more"
    raise ConfigError(f"{name}={text!r} must be a whole number {bounds} (unset, it is {default}).")


# GitHub's secret-scanning public keys: the answer of `GET /meta/public_keys/secret_scanning`, read
# leniently (GitHub may add fields), its PEM keys parsed once here.
SECRET_SCANNING_KEYS = "KEYLEDGER_SECRET_SCANNING_KEYS"


class _PublicKey(msgspec.Struct):
    key_identifier: str
    key: str  # every listed key is accepted: `is_current` only says which one GitHub signs new reports with


class _PublicKeys(msgspec.Struct):
    public_keys: list[_PublicKey]


def read_secret_scanning_keys(value: str | None) -> dict[str, ec.EllipticCurvePublicKey] | None:
    """The P-256 public keys by identifier of the variable (a path, or the JSON text itself); None
    when it is unset; else a ConfigError naming the variable and what is wrong."""
    if value is None:
        return None
    if value.lstrip().startswith("{"):
        text = value
    else:
        try:
            text = Path(value).read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(
                f"{SECRET_SCANNING_KEYS}: cannot read the file {value!r} ({type(error).__name__}); "
                "give the path of a readable JSON file, or the JSON text itself."
            ) from None
    try:
        document = msgspec.json.decode(text, type=_PublicKeys)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise ConfigError(
            f'{SECRET_SCANNING_KEYS} must be JSON shaped like {{"public_keys": [{{"key_identifier": …, '
            f'"key": "-----BEGIN PUBLIC KEY-----…"}}]}} (GitHub\'s /meta/public_keys/secret_scanning): {error}.'
        ) from None
    if not document.public_keys:
        raise ConfigError(f"{SECRET_SCANNING_KEYS} lists no public key; list at least one, or unset it.")
    return {entry.key_identifier: _p256_key(entry) for entry in document.public_keys}


def _p256_key(entry: _PublicKey) -> ec.EllipticCurvePublicKey:
    try:
        key = load_pem_public_key(entry.key.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(
            f"{SECRET_SCANNING_KEYS}: the key {entry.key_identifier!r} is not a PEM ECDSA P-256 public key "
            "(-----BEGIN PUBLIC KEY-----…); copy it as GitHub gives it."
        )
    return key
