"""Engine and sessions. SQLite gets WAL and foreign keys; writes begin IMMEDIATE (the write
lock up front), reads begin DEFERRED (a snapshot, never the write lock)."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

READ_ONLY = "dockyard_read_only"


class ReadOnlySessionError(RuntimeError):
    """A read session was asked to write: use the write sessions for that."""


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=20)
        _configure_sqlite(engine)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let us issue BEGIN ourselves (pysqlite's implicit BEGIN is DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get(READ_ONLY):
            # A WAL snapshot: readers never wait for the writer nor make it wait.
            conn.exec_driver_sql("BEGIN DEFERRED")
        else:
            # IMMEDIATE takes the write lock up front, so two transactions that read free
            # GPUs and then insert assignments never interleave (no SQLITE_BUSY on upgrade).
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def make_read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reading only (token checks, listings, pages): a flush of any change fails."""
    factory = sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)

    @event.listens_for(factory, "before_flush")
    def _refuse_writes(session, _context, _instances):
        if session.new or session.dirty or session.deleted:
            raise ReadOnlySessionError("a read-only session cannot write; use platform.sessions")

    return factory


Row = TypeVar("Row")


def insert_unique(db: Session, row: Row, conflict: Exception | None) -> Row | None:
    """Add `row` now, in a savepoint: if it breaks a unique constraint (a name taken,
    perhaps by a request that won a race), `conflict` is raised instead, naming the clash;
    with `conflict` None, None is returned and the transaction goes on (the row that won
    stands, for the caller to read)."""
    try:
        with db.begin_nested():
            db.add(row)
    except IntegrityError:
        if conflict is None:
            return None
        raise conflict from None
    return row
