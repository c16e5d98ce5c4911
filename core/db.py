"""Engine and session factory; the edge (request dependency, ``session_scope``) owns commits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings

# An execution option: the connection's transaction begins with SQLite's write lock.
SQLITE_IMMEDIATE = "stillhouse_sqlite_immediate"


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the API read while a worker writes; foreign keys are off by default.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # pysqlite begins a transaction only before its first write, so what a
            # transaction reads first is read outside it. BEGIN IMMEDIATE takes the write
            # lock before anything is read (waiting up to busy_timeout for it); pysqlite
            # then sees the transaction open and commits or rolls it back as usual.
            if conn.get_execution_options().get(SQLITE_IMMEDIATE):
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    return make_engine(get_settings().resolved_database_url)


@lru_cache(maxsize=1)
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def begin_serialized(session: Session) -> None:
    """Begin ``session``'s transaction so that it runs alone among transactions that begin
    the same way: on SQLite, which has no row locks, with ``BEGIN IMMEDIATE`` (the database's
    write lock, held until the commit). Elsewhere nothing: the caller locks rows. Must come
    before the transaction's first statement."""
    if session.get_bind().dialect.name != "sqlite":
        return
    if session.in_transaction():
        raise RuntimeError("begin_serialized: the session's transaction has already begun")
    session.connection(execution_options={SQLITE_IMMEDIATE: True})


@contextmanager
def session_scope() -> Iterator[Session]:
    """A unit of work outside HTTP (worker tasks, CLI): commit on success, roll back on error."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
