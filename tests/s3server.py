"""A moto S3 server in a subprocess on loopback, for tests that need a real S3 endpoint.

moto keeps everything in memory and checks no credentials or signatures (any key pair works).
``stop()`` then ``start()`` brings the endpoint back on the same port, empty: buckets and
objects do not survive a restart.

Usage::

    server = MotoServer()
    try:
        ...  # S3Storage(bucket, endpoint_url=server.endpoint_url, ...)
        server.stop()  # the endpoint is now unreachable
        server.start()  # back, empty
    finally:
        server.stop()
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

# moto accepts any credentials; these are the names its documentation uses.
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
REGION = "us-east-1"

_MOTO_SERVER = Path(sys.executable).parent / "moto_server"


class MotoServer:
    """``moto_server -H 127.0.0.1 -p <port>``, started on construction (``start=False``: not)."""

    def __init__(self, port: int | None = None, *, start: bool = True, timeout: float = 30.0):
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self.timeout = timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        if start:
            self.start()

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (on the same port as before) and wait until it answers HTTP."""
        if self.running:
            return
        self._close_log()
        # A file, not a pipe: nobody reads a pipe, and a full one would block the server.
        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            [str(_MOTO_SERVER), "-H", self.host, "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.timeout
        while True:
            if self._process.poll() is not None:
                output = self._output()
                self.stop()
                raise RuntimeError(f"moto_server exited on port {self.port}:\n{output}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                output = self._output()
                self.stop()
                raise RuntimeError(f"moto_server did not answer within {self.timeout}s:\n{output}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the server and wait for it; its port is closed afterwards."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._close_log()

    def reset(self) -> None:
        """Forget every bucket, object and upload (moto's own reset API)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MotoServer({self.endpoint_url!r}, running={self.running})"

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1) as response:
                response.read()
        except urllib.error.HTTPError:
            return True  # any HTTP answer means it is serving
        except OSError:  # refused while it starts, or a timeout
            return False
        return True

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read()[-4000:].decode(errors="replace")

    def _close_log(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            with contextlib.suppress(OSError):
                log.close()


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
