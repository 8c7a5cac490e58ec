"""Settings, read from the environment once at start-up."""

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path


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

    def __repr__(self) -> str:  # never print secrets by accident
        return f"Settings(host={self.host!r}, port={self.port}, embedded={self.database_url is None})"


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
        port=int(env.get("KEYLEDGER_PORT", "8080")),
        jwt_secret=secret,
        jwt_public_key=public_key,
        jwt_issuer=env.get("KEYLEDGER_JWT_ISSUER") or None,
        jwt_audience=env.get("KEYLEDGER_JWT_AUDIENCE") or None,
        service_token=env.get("KEYLEDGER_SERVICE_TOKEN") or secrets.token_urlsafe(32),
        pool_max_size=int(env.get("KEYLEDGER_POOL_MAX_SIZE", "10")),
        development=development,
    )
