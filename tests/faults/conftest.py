"""Fixtures of the fault suite: private servers it may kill, a real subscriber, the seed.

Every server the suite stops, restarts or kills is its own (``servers.py``): the machine's shared
RabbitMQ and PostgreSQL are never touched, not even read.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from nameko.runners import ServiceRunner
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.conftest import migrate
from tests.faults.harness import EventRecorder
from tests.faults.servers import PrivatePostgres, PrivateRabbit, TcpGate
from tests.s3server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoServer

SEED_VARIABLE = "MEDIA_FAULTS_SEED"


@pytest.fixture
def fault_rng(request: pytest.FixtureRequest) -> random.Random:
    """The test's randomness (kill moments, round order, files), from a seed that is printed
    and named in every failure. ``MEDIA_FAULTS_SEED=<seed>`` replays it."""
    seed = int(os.environ.get(SEED_VARIABLE) or random.SystemRandom().randrange(2**32))
    print(f"\nfault suite seed: {seed} (replay: {SEED_VARIABLE}={seed})")
    request.node.user_properties.append(("fault_seed", seed))
    rng = random.Random(seed)
    rng.seed_value = seed  # type: ignore[attr-defined]
    return rng


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def private_rabbit() -> Iterator[PrivateRabbit]:
    server = PrivateRabbit()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def fault_database(private_postgres: PrivatePostgres) -> Iterator[str]:
    """A fresh database on the private cluster, migrated with Alembic, dropped afterwards."""
    name = f"media_faults_{uuid.uuid4().hex[:10]}"
    # No pool: a connection kept from before a restart would be dead at teardown.
    admin = create_engine(
        private_postgres.admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = private_postgres.url(name)
        migrate(url)
        yield url
    finally:
        try:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()


@pytest.fixture
def subscriber(private_rabbit: PrivateRabbit) -> Iterator[EventRecorder]:
    """A real nameko service with event handlers, on the private broker, recording every event
    it is handed: ``(event type, eventId, mediaId)``."""
    recorder = EventRecorder()
    runner = ServiceRunner({"AMQP_URI": private_rabbit.amqp_uri, "serializer": "json"})
    runner.add_service(recorder.service)
    runner.start()
    try:
        yield recorder
    finally:
        runner.kill()


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def moto_gate() -> Iterator[tuple[MotoServer, TcpGate, str]]:
    """A moto S3 server with a bucket, reached through a gate the test shuts and opens."""
    with MotoServer() as server:
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=server.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )
        bucket = f"media-faults-{uuid.uuid4().hex[:10]}"
        client.create_bucket(Bucket=bucket)
        client.close()
        gate = TcpGate((server.host, server.port))
        try:
            yield server, gate, bucket
        finally:
            gate.close()
