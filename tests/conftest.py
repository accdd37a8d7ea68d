"""Fixtures shared by the whole suite: real databases (SQLite and PostgreSQL), real files, and
the service's own config.yml.

The suite runs under ``nameko test``, which applies eventlet's monkey patch before this module
is imported.
"""

from __future__ import annotations

import getpass
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic import command
from alembic.config import Config
from nameko.cli.main import setup_yaml_parser
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

from services.media.catalog.records import MediaCatalog
from services.media.core.database import make_engine
from services.media.core.models import Base
from services.media.core.settings import MediaSettings
from storage import LocalStorage

REPO = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = os.environ.get(
    "MEDIA_TEST_POSTGRES_URL", f"postgresql://{getpass.getuser()}@127.0.0.1:5432/test"
)
SIGNING_KEY = "test-signing-key-0123456789abcdef"


def require_tools(*names: str) -> None:
    """Fail, not skip, where a tool scripts/bootstrap installs (Debian's ffmpeg and
    poppler-utils) is missing: the suite must not pass by quietly testing less."""
    missing = [name for name in names if shutil.which(name) is None]
    assert not missing, f"{', '.join(missing)} not installed: run scripts/bootstrap"


def migrate(url: str) -> None:
    """Build the schema the only way production does: Alembic."""
    config = Config(str(REPO / "alembic.ini"))
    config.set_main_option("script_location", str(REPO / "migrations"))
    engine = make_engine(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    engine.dispose()


@contextmanager
def fresh_database(kind: str, folder: Path) -> Iterator[str]:
    """A new, migrated database of ``kind``; PostgreSQL ones are dropped afterwards."""
    if kind == "sqlite":
        url = f"sqlite:///{folder / 'media.db'}"
        migrate(url)
        yield url
        return
    name = f"media_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def postgres_admin_execute(statement: str) -> None:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(statement))
    admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A fresh, migrated database of each kind for the session."""
    with fresh_database(request.param, tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> Iterator[sessionmaker]:
    """A session factory over the session's database, emptied after each test."""
    yield sessionmaker(bind=engine, expire_on_commit=False)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    return tmp_path / "storage"


@pytest.fixture
def storage(storage_root: Path) -> LocalStorage:
    return LocalStorage(storage_root)


def load_config(**env: str) -> dict[str, Any]:
    """config.yml resolved the way ``nameko run`` resolves it, with ``env`` as the environment."""
    setup_yaml_parser()
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        with open(REPO / "config.yml") as handle:
            return yaml.safe_load(handle)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def settings() -> MediaSettings:
    return MediaSettings.from_config(load_config(URL_SIGNING_KEY=SIGNING_KEY))


@pytest.fixture
def catalog(sessions: sessionmaker, storage: LocalStorage, settings: MediaSettings) -> MediaCatalog:
    return MediaCatalog(sessions=sessions, storage=storage, settings=settings)
