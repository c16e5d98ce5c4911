"""Stillhouse client side: the Python SDK and the ``stillhouse`` CLI.

``Client`` (and ``AsyncClient`` for asyncio) call the REST API and answer with the typed
models of ``stillhouse.models``. They need only httpx and pydantic: the client is its own
distribution (``client/``); the server (database, broker, torch) is another, which adds its
commands to the same CLI.
"""

from stillhouse._core import ApiError, RetryPolicy, UploadRejected
from stillhouse.aclient import AsyncClient
from stillhouse.client import Client

__all__ = ["ApiError", "AsyncClient", "Client", "RetryPolicy", "UploadRejected"]
