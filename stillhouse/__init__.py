"""Stillhouse client side: the Python SDK (``stillhouse.client``) and the ``stillhouse`` CLI."""

from stillhouse.client import ApiError, Client

__all__ = ["ApiError", "Client"]
