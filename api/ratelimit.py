"""Token buckets, in this process or shared through Redis: requests per second per API key,
and failed authentications per client address.

A bucket holds up to ``burst`` tokens and refills at ``rate`` a second; a request takes one
(``peek`` asks what taking one would answer, and takes nothing).
With the embedded default (one API process, no Redis) the buckets live in memory. When the
broker is Redis, every API replica shares them there: one Lua script reads, refills and
takes a token atomically, on Redis's own clock (replicas' clocks may disagree).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Protocol

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# KEYS[1]: the bucket. ARGV: rate (tokens/s), burst, take ("1") or peek ("0"). Returns the
# wait in seconds ("0": go).
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local take = ARGV[3] == '1'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
if tokens < 1 then return tostring((1 - tokens) / rate) end
if not take then return '0' end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return '0'
"""


class RateLimiter(Protocol):
    async def wait_for(self, key: str, *, take: bool = True) -> float:
        """0 when a request of ``key`` may go now (taking a token unless ``take`` is false),
        else the seconds until it may."""
        ...

    async def aclose(self) -> None: ...


def retry_after(wait: float) -> str:
    return str(max(1, math.ceil(wait)))


class LocalBuckets:
    """Buckets in this process (the embedded default: one API process, no Redis)."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    async def wait_for(self, key: str, *, take: bool = True) -> float:
        # No await between the read and the write: the event loop makes this atomic.
        now = time.monotonic()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1:
            return (1 - tokens) / self.rate
        if not take:
            return 0.0
        tokens -= 1
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._buckets.clear()  # a full bucket is what a forgotten key gets anyway
        self._buckets[key] = (tokens, now)
        return 0.0

    async def aclose(self) -> None:
        self._buckets.clear()


class RedisBuckets:
    """Buckets in Redis, shared by every API replica. A Redis outage lets requests through
    (logged): the rate limit protects the service, it must not take it down."""

    def __init__(self, url: str, prefix: str, rate: float, burst: int) -> None:
        self.url, self.prefix, self.rate, self.burst = url, prefix, rate, burst
        self._scripts: dict[asyncio.AbstractEventLoop, AsyncScript] = {}
        self._clients: dict[asyncio.AbstractEventLoop, Redis] = {}

    def _script(self) -> AsyncScript:
        # A redis.asyncio connection belongs to the event loop that opened it.
        loop = asyncio.get_running_loop()
        script = self._scripts.get(loop)
        if script is None:
            self._scripts = {lp: s for lp, s in self._scripts.items() if not lp.is_closed()}
            self._clients = {lp: c for lp, c in self._clients.items() if not lp.is_closed()}
            client = Redis.from_url(self.url, socket_timeout=1.0, socket_connect_timeout=1.0)
            self._clients[loop] = client
            script = self._scripts[loop] = client.register_script(TOKEN_BUCKET_LUA)
        return script

    async def aclose(self) -> None:
        """Close this event loop's connections (the app's shutdown)."""
        loop = asyncio.get_running_loop()
        self._scripts.pop(loop, None)
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()

    async def wait_for(self, key: str, *, take: bool = True) -> float:
        bucket = f"{self.prefix}ratelimit:{key}"
        try:
            wait = await self._script()(
                keys=[bucket], args=[self.rate, self.burst, "1" if take else "0"]
            )
        except (RedisError, OSError) as exc:
            log.warning("rate limit not applied: Redis did not answer (%s)", exc)
            return 0.0
        return float(wait)
