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


def _buckets(rate: float, burst: int) -> RateLimiter | None:
    if rate <= 0:
        return None
    settings = get_settings()
    if settings.redis_url:
        return RedisBuckets(settings.redis_url, settings.broker_key_prefix, rate, max(1, burst))
    return LocalBuckets(rate, max(1, burst))


def _limiter(app: FastAPI) -> RateLimiter | None:
    if not hasattr(app.state, "rate_limiter"):
        settings = get_settings()
        app.state.rate_limiter = _buckets(settings.rate_limit_per_second, settings.rate_limit_burst)
    limiter: RateLimiter | None = app.state.rate_limiter
    return limiter


def _failure_limiter(app: FastAPI) -> RateLimiter | None:
    if not hasattr(app.state, "auth_failure_limiter"):
        settings = get_settings()
        app.state.auth_failure_limiter = _buckets(
            settings.auth_failures_per_second, settings.auth_failure_burst
        )
    limiter: RateLimiter | None = app.state.auth_failure_limiter
    return limiter


def _client_bucket(request: Request) -> str:
    return f"authfail:{request.client.host if request.client else 'unknown'}"


async def refuse_failing_client(request: Request) -> None:
    """Before a key is looked up: 429 when this client address has used up its failed
    authentications, so that guessing keys costs no database lookup past the burst. Takes
    nothing: only a failure does (``count_failed_auth``)."""
    limiter = _failure_limiter(request.app)
    if limiter is None:
        return
    wait = await limiter.wait_for(_client_bucket(request), take=False)
    if wait > 0:
        raise TooManyRequests(
            "too many requests with unknown API keys from this address",
            headers={"Retry-After": retry_after(wait)},
        )


async def count_failed_auth(request: Request) -> None:
    limiter = _failure_limiter(request.app)
    if limiter is not None:
        await limiter.wait_for(_client_bucket(request))


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
    for name in ("rate_limiter", "auth_failure_limiter"):
        limiter: RateLimiter | None = getattr(app.state, name, None)
        if limiter is not None:
            await limiter.aclose()
