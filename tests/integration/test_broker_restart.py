"""The broker restarts between a commit and its event: the event still arrives, once.

It really stops and starts the local RabbitMQ application, so it is marked ``broker_restart``
and scripts/test runs it in a step of its own, after everything else.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import eventlet
import pytest

from services.media.service import MediaService
from tests.files import upload_data
from tests.integration.conftest import Subscriber

pytestmark = [
    pytest.mark.broker_restart,
    pytest.mark.skipif(
        shutil.which("rabbitmqctl") is None, reason="needs a local RabbitMQ it may restart"
    ),
]


def _wait_for_port(port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            eventlet.sleep(0.5)
    raise TimeoutError(f"port {port} did not come back")


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


class BrokerRestartsBeforePublish(MediaService):
    """The real service, with the broker stopped right after the commit and started again after
    the worker's own publish attempt has failed."""

    restart_pending = False
    restarted = eventlet.event.Event()

    def _publish_recorded(self) -> None:
        # Timer workers pass here too, with nothing recorded: only a commit's worker restarts.
        if not type(self).restart_pending or not self.catalog.work.committed:
            super()._publish_recorded()
            return
        type(self).restart_pending = False
        _rabbitmqctl("stop_app")
        try:
            super()._publish_recorded()
        finally:
            _rabbitmqctl("start_app")
            _wait_for_port(5672)
            _wait_for_port(15672)
            type(self).restarted.send()


@pytest.fixture
def broker_left_running():
    """Whatever happens in the test (a killed worker included), the broker ends up running."""
    yield
    _rabbitmqctl("start_app")
    _wait_for_port(5672)
    _wait_for_port(15672)


def test_event_of_a_commit_survives_a_broker_restart(
    broker_left_running, runner_factory, service_config, events, connect
):
    runner = runner_factory(service_config, BrokerRestartsBeforePublish, Subscriber)
    runner.start()
    BrokerRestartsBeforePublish.restarted = eventlet.event.Event()
    BrokerRestartsBeforePublish.restart_pending = True

    def upload():
        try:
            with connect(user_id="u-1", timeout=60) as media:
                return media.upload_file(upload_data())
        except Exception as exc:  # the reply is lost with the broker; the change is not
            return exc

    caller = eventlet.spawn(upload)
    with eventlet.Timeout(180):
        BrokerRestartsBeforePublish.restarted.wait()
    # The outbox relay publishes it, whether it got there while the broker was stopping or after.
    received = events.wait_for(1, timeout=60)
    eventlet.sleep(3)  # a second copy (or a redelivered request redone) would have arrived by now
    assert events.types() == ["media_created"]
    media_id = received[0][1]["media"]["id"]
    with connect(user_id="u-1") as media:
        assert [m["id"] for m in media.findAll()["items"]] == [media_id]
    caller.kill()
