"""Typed keys for what the aiohttp application holds."""

import asyncpg
from aiohttp import web

from projections.projector import Projector
from service.auth import TokenVerifier
from service.config import Settings
from service.keycache import KeyCache

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
TOKENS = web.AppKey("tokens", TokenVerifier)
KEY_CACHE = web.AppKey("key_cache", KeyCache)
PROJECTOR = web.AppKey("projector", Projector)
