"""The processes the fault suite owns and may kill: a private PostgreSQL cluster, a private
RabbitMQ node, a TCP gate in front of the S3 endpoint, and the service itself (``nameko run``).

Nothing here touches the machine's shared RabbitMQ or PostgreSQL: every server is started from a
temporary folder on free loopback ports, and is stopped and deleted by its owner.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any

import eventlet
import requests

from tests.s3server import free_port

REPO = Path(__file__).resolve().parents[2]
NAMEKO = REPO / ".venv" / "bin" / "nameko"


def wait_for_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not open port {port} within {timeout}s") from None
            eventlet.sleep(0.1)


def tail(path: Path, size: int = 6000) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode(errors="replace")
    except OSError as exc:
        return f"({path}: {exc})"


def _kill_group(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL the process group this module started (its own session), and reap the leader."""
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


class PrivatePostgres:
    """A throw-away PostgreSQL cluster: ``initdb`` in a temporary folder, run as the ``postgres``
    OS user (the server refuses root), trust authentication, loopback only, a free port."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql")
        self.bin = Path(bins[-1]).parent
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="media-faults-pg-"))
        self.folder.chmod(0o755)  # the postgres user must reach its data folder
        self.home = self.folder / "pg"
        self.home.mkdir()
        shutil.chown(self.home, "postgres", "postgres")
        self.data = self.home / "data"
        self.log = self.home / "server.log"
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync",
                  "-E", "UTF8", "--locale=C")  # fmt: skip

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}?connect_timeout=3"

    def _options(self) -> str:
        # fsync off: the suite kills processes, never the machine; the page cache survives.
        return (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.home}"
            " -c fsync=off -c max_connections=200"
        )

    def _run(self, tool: str, *args: Any, timeout: float = 120) -> None:
        command = ["runuser", "-u", "postgres", "--", str(self.bin / tool), *map(str, args)]
        result = subprocess.run(
            command, capture_output=True, timeout=timeout, cwd=self.home, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({result.returncode}): {result.stderr.decode(errors='replace')}"
                f"\n{tail(self.log)}"
            )

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60",
                  "-o", self._options(), "start")  # fmt: skip

    def restart(self) -> None:
        """A fast shutdown (every session is cut, as an operator's restart does), then start."""
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-m", "fast", "-w", "-t", "60",
                  "-o", self._options(), "restart")  # fmt: skip

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


class PrivateRabbit:
    """A RabbitMQ node of our own: its own node name, ports, database, logs and cookie, and no
    plugins. Stopping or killing it disturbs nobody."""

    SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"

    def __init__(self) -> None:
        if not os.path.exists(self.SERVER):
            raise RuntimeError("rabbitmq-server is not installed")
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"media-faults-{uuid.uuid4().hex[:10]}@localhost"
        self.folder = Path(tempfile.mkdtemp(prefix="media-faults-rabbit-"))
        for name in ("home", "mnesia", "log"):
            (self.folder / name).mkdir()
        (self.folder / "enabled_plugins").write_text("[].\n")
        # An empty env file: the machine's rabbitmq-env.conf names the shared node.
        (self.folder / "rabbitmq-env.conf").write_text("")
        (self.folder / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        self.log = self.folder / "server.log"
        self.env = {
            **os.environ,
            "HOME": str(self.folder / "home"),  # the Erlang cookie of this node and its CLI
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.folder / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_CRASH_DUMP": str(self.folder / "erl_crash.dump"),
        }
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def amqp_uri(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self, timeout: float = 90) -> None:
        if self._log is None:
            self._log = open(self.log, "ab")  # closed in close()
        self._process = subprocess.Popen(
            [self.SERVER],
            env=self.env,
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, timeout, f"RabbitMQ node {self.node}")
        except TimeoutError:
            raise RuntimeError(f"private RabbitMQ did not start:\n{tail(self.log)}") from None

    def stop(self) -> None:
        """A graceful stop of the whole node (``rabbitmqctl stop``), as a restart does."""
        process = self._process
        if process is None:
            return
        subprocess.run(
            [self.CTL, "-n", self.node, "stop"],
            env=self.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _kill_group(process)
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        try:
            if self._process is not None and self._process.poll() is None:
                self.stop()
        finally:
            _kill_group(self._process)
            self._process = None
            if self._log is not None:
                self._log.close()
                self._log = None
            shutil.rmtree(self.folder, ignore_errors=True)


class TcpGate:
    """A loopback TCP relay in front of a server that can be shut and opened again on the same
    port: shut, the endpoint refuses connections and every open one is cut, as when the server
    process is stopped; opened, it answers again, with everything it stored before (a stopped
    moto server would come back empty, which no real S3 outage does)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._server: Any = None
        self._relays: set[Any] = set()
        self.open()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_open(self) -> bool:
        return self._listener is not None

    def open(self) -> None:
        if self._listener is not None:
            return
        self._listener = eventlet.listen(("127.0.0.1", self.port))
        self._server = eventlet.spawn(self._serve, self._listener)

    def shut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._server.kill()
        listener.close()
        for relay in list(self._relays):
            relay.kill()

    close = shut

    def _serve(self, listener: socket.socket) -> None:
        while True:
            client, _ = listener.accept()
            relay = eventlet.spawn(self._relay, client)
            self._relays.add(relay)
            relay.link(lambda thread: self._relays.discard(thread))

    def _relay(self, client: socket.socket) -> None:
        upstream = None
        pipes: list[Any] = []
        try:
            upstream = eventlet.connect(self.target)
            pipes = [
                eventlet.spawn(self._pipe, client, upstream),
                eventlet.spawn(self._pipe, upstream, client),
            ]
            for pipe in pipes:
                pipe.wait()
        except OSError:
            pass
        finally:
            # Sockets are closed only once no green thread waits on them (see test_tus.py).
            for pipe in pipes:
                pipe.kill()
            for end in (client, upstream):
                if end is not None:
                    with contextlib.suppress(OSError):
                        end.shutdown(socket.SHUT_RDWR)
                    end.close()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(256 * 1024):
                sink.sendall(data)
        except (OSError, EOFError):
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)


class ServiceExited(RuntimeError):
    """The service process is gone, and nobody killed it."""


class ServiceProcess:
    """``nameko run services.media --config config.yml`` as a separate process, configured
    through the environment as in docs/configuration.md, so that SIGKILL is a real one."""

    def __init__(self, env: dict[str, str], log: Path, web_port: int) -> None:
        self.env = env
        self.log_path = log
        self.web_port = web_port
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        assert not self.running
        if self._log is None:
            self._log = open(self.log_path, "ab")  # closed in close()
        self.starts += 1
        self._log.write(f"\n===== start {self.starts} =====\n".encode())
        self._log.flush()
        self._process = subprocess.Popen(
            [str(NAMEKO), "run", "services.media", "--config", "config.yml"],
            env={**os.environ, **self.env},
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def close_process(self) -> None:
        """Forget a process that has exited."""
        assert not self.running
        self._process = None

    def wait_ready(self, timeout: float = 60) -> None:
        """Until ``/health`` answers 200: database, broker and storage reachable."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.web_port}/health"
        while True:
            if not self.running:
                raise ServiceExited(f"the service exited:\n{tail(self.log_path)}")
            try:
                with requests.get(url, timeout=2) as response:
                    if response.status_code == 200:
                        return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the service was not healthy in {timeout}s")
            eventlet.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind, workers in flight die where they are."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        _kill_group(process)  # any tool (ffmpeg, pdftoppm) it had started

    def close(self) -> None:
        self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None
