"""Webhook delivery: due messages from the outbox, signed (Standard Webhooks), posted to the
address the guard checked (core.webhooks), one log row per attempt, retried with exponential
backoff until the retry window closes. At least once: a receiver dedupes on ``webhook-id``."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from core.db import session_scope
from core.settings import Settings, get_settings
from core.webhooks import RefusedURL, resolve_checked, sign, split_url
from models import WebhookAttempt, new_id, utcnow
from models.webhook_repository import WebhookRepository
from worker.metrics import count_webhook_attempt

log = logging.getLogger(__name__)

BATCH = 50
MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "Stillhouse-Webhooks/1"


def _connect(addresses: list[str], port: int, timeout: float | None) -> socket.socket:
    """The first of the checked addresses that answers (never a fresh lookup of the name)."""
    error: OSError = OSError("no address to connect to")
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            error = exc
    raise error


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the checked addresses; the Host header still names the URL's host."""

    def __init__(self, host: str, port: int, addresses: list[str], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.addresses = addresses

    def connect(self) -> None:
        self.sock = _connect(self.addresses, self.port, self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """TLS to the checked addresses, verifying the certificate against the URL's host name."""

    def __init__(self, host: str, port: int, addresses: list[str], timeout: float) -> None:
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.addresses = addresses

    def connect(self) -> None:
        raw = _connect(self.addresses, self.port, self.timeout)
        try:
            self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


@dataclass
class Outcome:
    status_code: int | None = None
    error: str | None = None
    refused: bool = False
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(url: str, body: bytes, headers: dict[str, str], *, settings: Settings) -> int:
    """POST ``body``; the status code. Redirects are not followed (they count as failures)."""
    scheme, host, port = split_url(url)
    addresses = resolve_checked(host, port, allow_private=settings.webhook_allow_private)
    kind = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
    conn = kind(host, port, addresses, settings.webhook_timeout_seconds)
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", target, body=body, headers=headers)
        response = conn.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        return response.status
    finally:
        conn.close()


def signed_headers(secret: str, msg_id: str, body: bytes) -> dict[str, str]:
    timestamp = int(time.time())
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def attempt(
    msg_id: str, url: str, secret: str, payload: dict[str, Any], settings: Settings
) -> Outcome:
    body = json.dumps(payload, separators=(",", ":")).encode()
    start = time.perf_counter()
    outcome = Outcome()
    try:
        outcome.status_code = post(
            url, body, signed_headers(secret, msg_id, body), settings=settings
        )
        if not outcome.ok:
            outcome.error = f"HTTP {outcome.status_code}"
    except RefusedURL as exc:
        outcome.error, outcome.refused = f"refused: {exc}", True
    except (OSError, http.client.HTTPException) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"[:1000]
    outcome.duration_ms = (time.perf_counter() - start) * 1000
    return outcome


def backoff(attempt_number: int, settings: Settings) -> float:
    """Seconds before attempt ``attempt_number + 1``: the base, doubled per attempt, capped."""
    delay = settings.webhook_backoff_seconds * 2 ** (attempt_number - 1)
    return float(min(delay, settings.webhook_backoff_max_seconds))


def next_state(
    outcome: Outcome, attempt_number: int, created_at: datetime, settings: Settings
) -> tuple[str, datetime | None]:
    """(status, next attempt): delivered; failed (refused, or the window closed); pending."""
    if outcome.ok:
        return "delivered", None
    if outcome.refused:
        return "failed", None
    due = utcnow() + timedelta(seconds=backoff(attempt_number, settings))
    if due > created_at + timedelta(hours=settings.webhook_retry_hours):
        return "failed", None
    return "pending", due


def deliver_one(message_id: str, settings: Settings) -> bool:
    """One attempt at one message, unless another sweeper took it. True when it landed."""
    now = utcnow()
    hold = now + timedelta(seconds=settings.webhook_timeout_seconds + 30)
    with session_scope() as session:
        repo = WebhookRepository(session)
        number = repo.claim(message_id, now, hold)
        message = repo.message(message_id) if number is not None else None
        hook = repo.get(message.webhook_id) if message is not None else None
        if number is None or message is None or hook is None:
            return False
        url, secret, payload, created = hook.url, hook.secret, message.payload, message.created_at
    outcome = attempt(message_id, url, secret, payload, settings)
    status, due = next_state(outcome, number, created, settings)
    with session_scope() as session:
        repo = WebhookRepository(session)
        message = repo.message(message_id)
        if message is None:  # the endpoint was deleted meanwhile
            return False
        row = WebhookAttempt(
            id=new_id("wha"),
            message_id=message_id,
            webhook_id=message.webhook_id,
            attempt=number,
            status_code=outcome.status_code,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
            created_at=utcnow(),
        )
        repo.record(message, row, status=status, next_attempt_at=due)
    count_webhook_attempt(status)
    if status != "delivered":
        log.info(
            "webhook message %s attempt %s: %s (%s)", message_id, number, outcome.error, status
        )
    return status == "delivered"


def deliver_due(settings: Settings | None = None) -> int:
    """Attempt every due message once; returns how many landed."""
    settings = settings or get_settings()
    with session_scope() as session:
        ids = WebhookRepository(session).due(utcnow(), BATCH)
    return sum(deliver_one(message_id, settings) for message_id in ids)
