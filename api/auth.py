"""Who is calling and what they may do: the key's principal, its scope, its rate limit."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI, Request

from api.errors import Forbidden, TooManyRequests
from api.ratelimit import LocalBuckets, RateLimiter, RedisBuckets, retry_after
from core.keys import Scope
from core.settings import get_settings

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    """A live API key: its id, its tenant and its scope."""

    key_id: str
    tenant_id: str
    scope: Scope


def check_scope(method: str, principal: Principal) -> None:
    """``read`` keys may only read; managing keys and webhooks is checked by ``require``."""
    if principal.scope == Scope.READ and method not in READ_METHODS:
        raise Forbidden(f"this key's scope is 'read': {method} needs a 'write' or 'admin' key")


def require(principal: Principal, scope: Scope) -> None:
    order = (Scope.READ, Scope.WRITE, Scope.ADMIN)
    if order.index(principal.scope) < order.index(scope):
        raise Forbidden(f"this needs an '{scope}' key; this key's scope is '{principal.scope}'")


def _limiter(app: FastAPI) -> RateLimiter | None:
    if not hasattr(app.state, "rate_limiter"):
        settings = get_settings()
        limiter: RateLimiter | None = None
        if settings.rate_limit_per_second > 0:
            rate, burst = settings.rate_limit_per_second, max(1, settings.rate_limit_burst)
            if settings.redis_url:
                limiter = RedisBuckets(settings.redis_url, settings.broker_key_prefix, rate, burst)
            else:
                limiter = LocalBuckets(rate, burst)
        app.state.rate_limiter = limiter
    limiter = app.state.rate_limiter
    return limiter


async def authorize(request: Request, principal: Principal) -> None:
    """The scope against the method, then one token of the key's bucket (429 when empty)."""
    check_scope(request.method, principal)
    limiter = _limiter(request.app)
    if limiter is None:
        return
    wait = await limiter.wait_for(principal.key_id)
    if wait > 0:
        raise TooManyRequests(
            f"more than {get_settings().rate_limit_per_second:g} requests a second with this key",
            headers={"Retry-After": retry_after(wait)},
        )


async def close_rate_limiter(app: FastAPI) -> None:
    limiter: RateLimiter | None = getattr(app.state, "rate_limiter", None)
    if limiter is not None:
        await limiter.aclose()
