"""Typed keys for what the aiohttp application holds."""

from aiohttp import web

from events.note import Signer
from projections.projector import Projector
from service.app.keycache import KeyCache
from service.config import Settings
from service.http.auth import TokenVerifier
from service.http.middleware import InFlight
from service.store.db import Pool

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", Pool)
TOKENS = web.AppKey("tokens", TokenVerifier)
KEY_CACHE = web.AppKey("key_cache", KeyCache)
PROJECTOR = web.AppKey("projector", Projector)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
SIGNER = web.AppKey("checkpoint_signer", Signer)
