"""Fault injection: the service, its database, its broker and its object store die or go away
in the middle of a stream of uploads, and nothing is lost, doubled or left behind.

The service runs as a real ``nameko run`` process and is killed with SIGKILL. PostgreSQL and
RabbitMQ are private instances this suite starts (``servers.py``), so restarting them disturbs
nobody. The seed of each test is printed; ``MEDIA_FAULTS_SEED=<seed>`` replays its schedule (kill
moments, round order, files, callers' choices; not the exact interleaving of green threads).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import eventlet
import pytest
from sqlalchemy.orm import sessionmaker

from services.media.core.database import make_engine
from services.media.core.settings import MediaSettings
from storage import LocalStorage, Storage
from storage.s3 import S3Storage
from tests.conftest import SIGNING_KEY, load_config
from tests.faults.harness import EventRecorder, FaultHarness
from tests.faults.servers import (
    PrivatePostgres,
    PrivateRabbit,
    ServiceExited,
    ServiceProcess,
    TcpGate,
    tail,
)
from tests.s3server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoServer, free_port

pytestmark = pytest.mark.faults

LEASE_SECONDS = 3  # MEDIA_PROCESSING_LEASE: short, so that taken-over jobs show within a round
KILL_ROUNDS = 20


def service_env(database_url: str, amqp_uri: str, port: int, **extra: str) -> dict[str, str]:
    """The service's settings, as environment variables (docs/configuration.md)."""
    return {
        "DATABASE_URL": database_url,
        "AMQP_URI": amqp_uri,
        "URL_SIGNING_KEY": SIGNING_KEY,
        "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "MEDIA_OUTBOX_INTERVAL": "0.2",
        "MEDIA_PROCESSING_INTERVAL": "0.3",
        "MEDIA_PROCESSING_LEASE": str(LEASE_SECONDS),
        "MEDIA_PROCESSING_RETRY_DELAYS": "1,1",  # passing failures (S3 away) retried soon
        "MEDIA_SWEEP_INTERVAL": "2",
        "MEDIA_UPLOAD_EXPIRY_INTERVAL": "2",
        "MEDIA_PURGE_INTERVAL": "5",
        **extra,
    }


class Rig:
    """The service process and the harness over it, torn down whatever happens."""

    def __init__(
        self,
        rng: random.Random,
        env: dict[str, str],
        storage: Storage,
        recorder: EventRecorder,
        work: Path,
    ) -> None:
        self.rng = rng
        self.port = int(env["WEB_SERVER_ADDRESS"].rsplit(":", 1)[1])
        self.service = ServiceProcess(env, work / "service.log", self.port)
        self.engine = make_engine(env["DATABASE_URL"])
        self.exits: list[int | None] = []  # exit codes of the service quitting by itself
        self.harness = FaultHarness(
            rng=rng,
            amqp_uri=env["AMQP_URI"],
            public_base_url=env["PUBLIC_BASE_URL"],
            sessions=sessionmaker(bind=self.engine, expire_on_commit=False),
            storage=storage,
            recorder=recorder,
            settings=MediaSettings.from_config(load_config(URL_SIGNING_KEY=SIGNING_KEY)),
            lease_seconds=LEASE_SECONDS,
            describe_failure=self.describe,
        )

    def describe(self) -> str:
        seed = self.rng.seed_value  # type: ignore[attr-defined]
        return (
            f"seed {seed} (replay: MEDIA_FAULTS_SEED={seed})\n"
            + "\n".join(self.harness.timeline)
            + f"\n--- service log (tail) ---\n{tail(self.service.log_path)}"
        )

    def supervise(self, timeout: float = 90) -> None:
        """What the deployment's restart policy does (docker-compose: ``restart:
        unless-stopped``): a service process that exits by itself is started again, until one
        has stayed healthy for a while."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.service.running:
                code = self.service.exit_code
                self.exits.append(code)
                self.harness.timeline.append(f"  the service exited by itself ({code}); restarted")
                self.service.close_process()
                self.service.start()
            try:
                self.service.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
                eventlet.sleep(2)  # a process on its way out can still answer /health
                self.service.wait_ready(timeout=5)
                return
            except ServiceExited:
                if time.monotonic() > deadline:
                    raise

    def kill_and_restart(self) -> None:
        """SIGKILL, then a supervisor's restart a moment later."""
        self.service.kill()
        eventlet.sleep(self.rng.uniform(0, 0.3))
        self.service.start()
        self.service.wait_ready()

    def close(self) -> None:
        try:
            self.service.close()
        finally:
            self.engine.dispose()


@pytest.fixture
def rig_factory(
    fault_rng: random.Random, subscriber: EventRecorder, tmp_path: Path
) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(env: dict[str, str], storage: Storage) -> Rig:
        rig = Rig(fault_rng, env, storage, subscriber, tmp_path)
        rigs.append(rig)
        rig.service.start()
        rig.service.wait_ready()
        return rig

    yield make
    for rig in rigs:
        rig.close()


def test_sigkill_loop_with_a_database_and_a_broker_restart(
    rig_factory: Callable[..., Rig],
    fault_rng: random.Random,
    fault_database: str,
    private_postgres: PrivatePostgres,
    private_rabbit: PrivateRabbit,
    tmp_path: Path,
) -> None:
    """20 rounds in which the service is SIGKILLed at a random moment of the stream and
    restarted, and, at random places among them, one round in which PostgreSQL restarts and one
    in which RabbitMQ restarts while the service keeps running. Local disk storage."""
    root = tmp_path / "storage"
    env = service_env(
        fault_database,
        private_rabbit.amqp_uri,
        free_port(),
        STORAGE_BACKEND="local",
        STORAGE_ROOT=str(root),
    )
    rig = rig_factory(env, LocalStorage(root))

    def restart_postgres() -> None:
        private_postgres.restart()
        rig.service.wait_ready()

    def restart_broker() -> None:
        private_rabbit.restart()
        # nameko 2.14 kills its container, and `nameko run` exits, when a reply cannot be
        # published or an ack meets the dead connection; the deployment's supervisor restarts
        # it. Only this round allows it: anywhere else an exit fails the test.
        rig.supervise()

    faults: dict[str, Callable[[], None]] = {
        "SIGKILL": rig.kill_and_restart,
        "PostgreSQL restart": restart_postgres,
        "RabbitMQ restart": restart_broker,
    }
    rounds = ["SIGKILL"] * KILL_ROUNDS + ["PostgreSQL restart", "RabbitMQ restart"]
    fault_rng.shuffle(rounds)
    for number, fault in enumerate(rounds, 1):
        rig.harness.run_round(number, fault, faults[fault])
    print(rig.harness.summary())
    print("\n".join(rig.harness.timeline))
    assert {a.round for a in rig.harness.attempts if a.answers} == set(range(1, len(rounds) + 1))


def test_s3_endpoint_stopped_and_started_mid_stream(
    rig_factory: Callable[..., Rig],
    fault_rng: random.Random,
    fault_database: str,
    private_rabbit: PrivateRabbit,
    moto_gate: tuple[MotoServer, TcpGate, str],
) -> None:
    """The service on STORAGE_BACKEND=s3: the S3 endpoint goes away for a second or two in the
    middle of a stream, then the service is SIGKILLed in the middle of another."""
    server, gate, bucket = moto_gate
    env = service_env(
        fault_database,
        private_rabbit.amqp_uri,
        free_port(),
        STORAGE_BACKEND="s3",
        S3_BUCKET=bucket,
        S3_ENDPOINT_URL=gate.url,
        S3_REGION=REGION,
        AWS_ACCESS_KEY_ID=ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
        # moto lists every multipart upload as initiated in 2010, so the sweeper's clean-up of
        # day-old ones would abort the live uploads of every session: keep it from running.
        MEDIA_SWEEP_INTERVAL="3600",
    )
    # The checks read the bucket directly, past the gate.
    storage = S3Storage(
        bucket,
        endpoint_url=server.endpoint_url,
        region=REGION,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
    )
    try:
        rig = rig_factory(env, storage)

        def s3_outage() -> None:
            gate.shut()
            eventlet.sleep(fault_rng.uniform(1.0, 2.0))
            gate.open()

        faults = {"S3 stopped and started": s3_outage, "SIGKILL": rig.kill_and_restart}
        rounds = ["S3 stopped and started", "SIGKILL"]
        for number, fault in enumerate(rounds, 1):
            rig.harness.run_round(number, fault, faults[fault])
        print(rig.harness.summary())
        print("\n".join(rig.harness.timeline))
        assert {a.round for a in rig.harness.attempts if a.answers} == set(
            range(1, len(rounds) + 1)
        )
    finally:
        storage.close()
