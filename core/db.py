"""Engine and session factory; the edge (request dependency, ``session_scope``) owns commits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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


@dataclass
class UnitOfWork:
    """A request's session, handed to the services. The edge owns its transaction: the API's
    request dependency commits once the route has returned, then runs the after-commit hooks
    (publishing tasks: a worker must find the row it is sent); on an error it rolls back and
    runs the after-rollback hooks (removing bytes stored for rows that will not exist).
    Services only flush."""

    session: Session
    _after_commit: list[Callable[[], None]] = field(default_factory=list)
    _after_rollback: list[Callable[[], None]] = field(default_factory=list)

    def after_commit(self, fn: Callable[[], None]) -> None:
        self._after_commit.append(fn)

    def after_rollback(self, fn: Callable[[], None]) -> None:
        self._after_rollback.append(fn)

    def finish(self) -> None:
        """Commit (a no-op commit after reads only gives the connection back) and close."""
        try:
            self.session.commit()
        except BaseException:
            self.abort()
            raise
        self.session.close()
        for hook in self._after_commit:
            hook()

    def abort(self) -> None:
        try:
            self.session.rollback()
            self.session.close()
        finally:
            for hook in self._after_rollback:
                hook()
