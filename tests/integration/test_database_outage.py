"""The database goes away while the service runs: callers get a clear error and no file stays."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from services.media.client import StorageUnavailable
from services.media.service import MediaService
from tests.conftest import fresh_database, postgres_admin_execute
from tests.files import upload_data


@pytest.fixture
def postgres_url(tmp_path):
    with fresh_database("postgresql", tmp_path) as url:
        yield url


def test_upload_while_the_database_refuses_connections(
    runner_factory, service_config, connect, postgres_url, tmp_path
):
    service_config["DB_URIS"] = {"media:Base": postgres_url}
    runner = runner_factory(service_config, MediaService)
    runner.start()
    name = make_url(postgres_url).database
    with connect(user_id="u-1") as media:
        media.upload_file(upload_data())  # healthy: pooled connections exist
        postgres_admin_execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        postgres_admin_execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )
        try:
            with pytest.raises(StorageUnavailable, match="database is unavailable"):
                media.upload_file(upload_data(name="second.png"))
        finally:
            postgres_admin_execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        # Back again: only the first upload's bytes are on disk (with the variants processing
        # may have made of it, named after it), and the service works.
        storage = tmp_path / "storage"
        files = [p for p in storage.rglob("*") if p.is_file()]
        (original,) = [p for p in files if "." not in p.name]
        assert all(p.name.startswith(original.name) for p in files)
        assert len(media.findAll()["items"]) == 1
