"""Engine set-up shared by the service, the migrations and the tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

DEFAULT_DATABASE_URL = "sqlite:///var/media.db"


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def engine_options(url: str) -> dict[str, Any]:
    if make_url(url).get_backend_name() == "sqlite":
        # One connection per green thread is fine; check_same_thread only guards OS threads,
        # and thread-pooled work never touches the session.
        return {"connect_args": {"check_same_thread": False, "timeout": 30}}
    return {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 10}


def prepare_engine(engine: Engine) -> Engine:
    """Per-connection settings; SQLite wants WAL and foreign keys on every connection."""
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
            # ILIKE compiles to lower(x) LIKE lower(y) on SQLite, whose lower() is ASCII-only.
            dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)

    return engine


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def make_engine(url: str | None = None) -> Engine:
    url = url or database_url()
    return prepare_engine(create_engine(url, **engine_options(url)))


def is_sqlite_url(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


__all__ = [
    "DEFAULT_DATABASE_URL",
    "database_url",
    "engine_options",
    "make_engine",
    "prepare_engine",
]
