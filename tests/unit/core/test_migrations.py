"""The Alembic migrations and the models describe the same schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from services.media.core.models import Base


def test_models_match_the_migrated_schema(engine):
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_every_sort_has_a_keyset_index(engine):
    indexes = {tuple(index["column_names"]) for index in inspect(engine).get_indexes("media")}
    for column in ("created_at", "size", "original_name"):
        assert (column, "id") in indexes
    for prefix in ("user_id", "type", "status", "is_public", "folder", "mime_type"):
        assert (prefix, "created_at", "id") in indexes
    assert ("entity_type", "entity_id", "created_at", "id") in indexes
