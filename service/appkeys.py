"""Typed keys for what the aiohttp application holds."""

import asyncpg
from aiohttp import web

from service.auth import TokenVerifier
from service.config import Settings

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
TOKENS = web.AppKey("tokens", TokenVerifier)
