"""``stillhouse keys create``: a key in the server's database, refused in one line when that
database is not where the settings point (the usual mistake: another STILLHOUSE_DATA_DIR)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from core.db import session_scope
from core.settings import get_settings
from models.keys import create_key
from stillhouse.cli_common import CliError

WHERE = (
    "run it with the server's STILLHOUSE_DATA_DIR (or STILLHOUSE_DATABASE_URL); "
    "`make run` creates and migrates the database on its first start"
)


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _check_sqlite_exists(url: str) -> None:
    """SQLite would quietly create an empty file (and folder) where none was meant to be."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database or "")
        if not path.exists():
            raise CliError(f"no Stillhouse database at {path}", WHERE)


def create_key_for(tenant: str) -> str:
    url = get_settings().resolved_database_url
    _check_sqlite_exists(url)
    try:
        with session_scope() as session:
            return create_key(session, tenant_name=tenant)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise CliError(f"cannot create a key in {_shown(url)}: {reason}", WHERE) from exc
