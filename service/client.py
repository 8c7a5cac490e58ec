"""Key auth for our own aiohttp services, in a few lines:

    client = KeyledgerClient("http://127.0.0.1:8080", service_token=os.environ["KEYLEDGER_SERVICE_TOKEN"])
    app = web.Application(middlewares=[keyledger_middleware(client, cost_of=my_pricing)])
    client.setup(app)

The middleware verifies the `sk-` key of every request against keyledger (with a short local cache)
and reports each served request's usage in background batches: a bounded buffer (callers wait when
it is full, nothing is dropped), retries that resend the same request_ids (keyledger counts each
once), and a final flush on shutdown.

A refused key gets keyledger's answer unchanged (status and JSON body `{"error": {"message", "type"}}`),
so the caller sees every refusal of SPEC "Key verification" as keyledger words it:

    403 forbidden              malformed, unknown or revoked key
    403 key_expired            past its expires_at (a rotated key after its grace period too)
    402 subscription_required  the account has no active subscription
    402 spend_limit_reached    the key's cost this UTC month reached its monthly_spend_limit_chf
    503 service_unavailable    keyledger cannot check the key right now (never cached)

The middleware itself answers 401 authentication_required to a request without `Authorization:
Bearer`, and 503 service_unavailable when keyledger cannot be reached. Verdicts, refusals
included, are cached for `cache_seconds`: a lifted refusal (a raised limit, a renewed
subscription) reaches callers that much later than keyledger's own bound.
"""

import asyncio
import hashlib
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import msgspec
from aiohttp import web

log = logging.getLogger(__name__)

KEY_ID = web.RequestKey("keyledger_key_id", str)
ACCOUNT_ID = web.RequestKey("keyledger_account_id", str)
_REJECTED_INDEX = re.compile(r"events\[(\d+)\]")


@dataclass(frozen=True)
class Verdict:
    status: int
    body: bytes  # keyledger's JSON answer, passed on as is when the key is refused
    key_id: str | None = None
    account_id: str | None = None


class KeyledgerClient:
    def __init__(
        self,
        base_url: str,
        service_token: str,
        *,
        cache_seconds: float = 1.0,
        batch_size: int = 1000,
        flush_interval: float = 0.5,
        max_buffer: int = 100_000,
        timeout: float = 5.0,
    ):
        self._base = base_url.rstrip("/")
        self._service_headers = {"Authorization": f"Bearer {service_token}"}
        self._cache_seconds = cache_seconds
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._verdicts: dict[bytes, tuple[float, Verdict]] = {}
        self._buffer: asyncio.Queue[dict] = asyncio.Queue(max_buffer)
        self._sending: list[dict] = []  # the flusher's batch, out of the buffer and not yet taken
        self._session: aiohttp.ClientSession | None = None
        self._flusher: asyncio.Task | None = None

    # lifecycle

    def setup(self, app: web.Application) -> None:
        async def lifetime(_app):
            await self.start()
            yield
            await self.close()

        app.cleanup_ctx.append(lifetime)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        self._flusher = asyncio.create_task(self._flush_forever())

    async def close(self) -> None:
        """Stop the background flusher, send everything still buffered, close the session."""
        if self._flusher:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._sending:  # cut off mid-send: send it again (same request_ids, so it counts once)
            await self._send(self._sending)
        while not self._buffer.empty():
            await self._send(self._take_batch())
        if self._session:
            await self._session.close()

    # verification

    async def verify(self, key: str) -> Verdict:
        digest = hashlib.sha256(key.encode()).digest()
        now = time.monotonic()
        cached = self._verdicts.get(digest)
        if cached and cached[0] > now:
            return cached[1]
        async with self._session.get(
            f"{self._base}/api/v1/auth/verify", headers={"Authorization": f"Bearer {key}"}
        ) as response:
            body = await response.read()
            verdict = Verdict(
                response.status,
                body,
                response.headers.get("X-Keyledger-Key-Id"),
                response.headers.get("X-Keyledger-Account-Id"),
            )
        if response.status in (200, 402, 403):  # definite answers; 5xx are never cached
            if len(self._verdicts) > 100_000:
                self._verdicts.clear()
            self._verdicts[digest] = (now + self._cache_seconds, verdict)
        return verdict

    # usage

    async def report(
        self,
        key_id: str,
        cost_chf: str,
        *,
        units: int = 0,
        endpoint: str = "",
        model: str = "",
        request_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> None:
        """Buffer one request's usage; waits only when the buffer is full."""
        await self._buffer.put(
            {
                "request_id": request_id or str(uuid.uuid4()),
                "key_id": key_id,
                "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
                "cost_chf": str(cost_chf),
                "units": units,
                "endpoint": endpoint,
                "model": model,
            }
        )

    def _take_batch(self) -> list[dict]:
        batch = []
        while len(batch) < self._batch_size and not self._buffer.empty():
            batch.append(self._buffer.get_nowait())
        return batch

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            while not self._buffer.empty():
                self._sending = self._take_batch()
                await self._send(self._sending)
                self._sending = []

    async def _send(self, batch: list[dict]) -> None:
        """Deliver one batch; resend the same events (same request_ids) until keyledger takes them."""
        delay = 0.1
        while batch:
            try:
                async with self._session.post(
                    f"{self._base}/api/v1/usage/", json={"events": batch}, headers=self._service_headers
                ) as response:
                    if response.status == 202:
                        return
                    answer = await response.read()
                    # 400 (a malformed event) or 422 (one the log refuses), naming it: drop that one.
                    if response.status in (400, 422) and (match := _REJECTED_INDEX.search(answer.decode())):
                        rejected = batch.pop(int(match.group(1)))  # keyledger will never take it
                        log.error("keyledger refused usage %s: %s", rejected["request_id"], answer.decode())
                        continue
                    log.warning("keyledger answered %s to a usage batch; retrying", response.status)
            except (aiohttp.ClientError, TimeoutError) as error:
                log.warning("usage batch not delivered (%s); retrying", type(error).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def keyledger_middleware(
    client: KeyledgerClient, cost_of: Callable[[web.Request, web.StreamResponse], str] = lambda *_: "0"
):
    """An aiohttp middleware: verify the caller's sk- key, serve, report the request's usage."""

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return _envelope(
                401, "authentication_required", "Send your API key as Authorization: Bearer sk-…."
            )
        try:
            verdict = await client.verify(key.strip())
        except (aiohttp.ClientError, TimeoutError):
            return _envelope(503, "service_unavailable", "Key verification is unavailable; retry shortly.")
        if verdict.status != 200:
            return web.Response(status=verdict.status, body=verdict.body, content_type="application/json")
        request[KEY_ID], request[ACCOUNT_ID] = verdict.key_id, verdict.account_id
        response = await handler(request)
        if response.status < 400:
            await client.report(verdict.key_id, cost_of(request, response), endpoint=request.path)
        return response

    return middleware


def _envelope(status: int, type_: str, message: str) -> web.Response:
    body = msgspec.json.encode({"error": {"message": message, "type": type_}})
    return web.Response(status=status, body=body, content_type="application/json")
