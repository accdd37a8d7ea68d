"""Logs and metrics of every entrypoint run: one line and a few counters per RPC call, HTTP
request and timer run.

:class:`Observability` is a nameko dependency provider. At container start it configures logging
from ``LOG_FORMAT`` and ``LOG_LEVEL`` and quiets nameko's own report of expected errors; around
each worker it times the run, counts it in :mod:`services.media.core.metrics` and logs one line.

A refused request (a contract error, listed in the entrypoint's ``expected_exceptions``) is normal
traffic: nameko would log it as a WARNING with a full traceback; here it is one INFO line with
the method, the error type, its message and the call id. Unexpected exceptions keep nameko's
ERROR line with the traceback.
"""

from __future__ import annotations

import inspect
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nameko.exceptions import BadRequest
from nameko.extensions import DependencyProvider
from nameko.rpc import Rpc
from nameko.timer import Timer
from nameko.web.handlers import HttpRequestHandler
from pythonjsonlogger.json import JsonFormatter

from services.media.core import metrics
from services.media.core.settings import ConfigurationError

log = logging.getLogger("services.media.calls")

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What a text line adds after its message (which already says the rest).
TEXT_FIELDS = ("call_id", "parent_call_id", "caller", "media_id", "client")
# nameko.containers logs a handled expected exception with this message (nameko 2.14).
EXPECTED_ERROR_MESSAGE = "(expected) error handling worker %s: %s"
MEDIA_ID_PARAMETERS = ("id", "mediaId", "media_id")
# RPC methods whose arguments carry file bytes (base64): method -> (parameter, key in it or None).
CONTENT_ARGUMENTS: dict[str, tuple[str, str | None]] = {
    "upload_file": ("data", "content"),
    "uploadPart": ("content", None),
}


# -- logging configuration ------------------------------------------------------------------


class TextFormatter(logging.Formatter):
    """Plain lines; a call's fields follow its message as ``name=value``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        values = record.__dict__
        if "call_id" not in values:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the fields
        pairs = " ".join(
            f"{name}={values[name]}" for name in TEXT_FIELDS if values.get(name) is not None
        )
        return f"{head} {pairs}{newline}{rest}"


class JsonLineFormatter(JsonFormatter):
    """One JSON object a line: timestamp (UTC, ISO-8601 with ``Z``), level, logger, message,
    the fields of a call, and ``exc_info`` (the traceback) where there is one."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        moment = datetime.fromtimestamp(record.created, tz=UTC)
        log_data["timestamp"] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        super().add_fields(log_data, record, message_dict)


def json_formatter() -> logging.Formatter:
    return JsonLineFormatter()


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each line (as ``logging.lastResort``
    does), so a stream replaced after start-up, by a test runner say, is followed."""

    media_handler = True

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(config: dict[str, Any]) -> None:
    """Set the root logger up from ``LOG_FORMAT`` (text, json) and ``LOG_LEVEL``, once per
    process whatever the number of containers.

    A ``LOGGING`` dict in the config (which ``nameko run`` hands to ``logging.config``) wins:
    then nothing is changed here. Otherwise the handler ``nameko run`` installs with
    ``logging.basicConfig`` is replaced by this one, so no line is written twice.
    """
    form = str(config.get("LOG_FORMAT") or "text").strip().lower()
    if form not in LOG_FORMATS:
        raise ConfigurationError(f"LOG_FORMAT must be text or json, not {form!r}")
    level = _level(config.get("LOG_LEVEL"))
    if "LOGGING" in config:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "media_handler", False) or _is_basic_stderr(handler):
            root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(json_formatter() if form == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)


def _level(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    name = str(value or "INFO").strip().upper()
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise ConfigurationError(
            f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {value!r}"
        )
    return level


def _is_basic_stderr(handler: logging.Handler) -> bool:
    """The handler ``logging.basicConfig()`` adds (nameko run calls it without LOGGING)."""
    return type(handler) is logging.StreamHandler and handler.stream in (
        sys.stderr,
        sys.__stderr__,
    )


# -- nameko's report of expected errors -----------------------------------------------------

# Set on the containers whose runs Observability logs: only their expected errors are quieted.
OBSERVED_MARK = "media_observed"


class ExpectedErrorFilter(logging.Filter):
    """Drops nameko's WARNING-with-traceback for an expected exception of an observed container
    (Observability logs the run's one line instead); every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != EXPECTED_ERROR_MESSAGE or not record.args:
            return True
        worker_ctx = record.args[0] if isinstance(record.args, tuple) else None
        return not getattr(getattr(worker_ctx, "container", None), OBSERVED_MARK, False)


EXPECTED_ERROR_FILTER = ExpectedErrorFilter()


def quiet_expected_errors(container: Any) -> None:
    setattr(container, OBSERVED_MARK, True)
    containers_log = logging.getLogger("nameko.containers")
    if EXPECTED_ERROR_FILTER not in containers_log.filters:
        containers_log.addFilter(EXPECTED_ERROR_FILTER)


# -- per-run instrumentation ----------------------------------------------------------------

RPC, HTTP, TIMER = "rpc", "http", "timer"


@dataclass
class _Entrypoint:
    """What is worked out once per entrypoint: its kind, where its media id and content are
    among the arguments, and the metric children of each outcome."""

    kind: str
    name: str
    route: str | None = None
    media_id_at: tuple[int, str] | None = None
    content_at: tuple[int, str, str | None] | None = None
    children: dict[Any, tuple[Any, Any]] = field(default_factory=dict)


def _parameter(function: Callable[..., Any], names: tuple[str, ...]) -> tuple[int, str] | None:
    try:
        parameters = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return None
    if parameters and parameters[0] == "self":
        parameters = parameters[1:]
    for index, name in enumerate(parameters):
        if name in names:
            return index, name
    return None


def _argument(worker_ctx: Any, at: tuple[int, str]) -> Any:
    index, name = at
    if name in worker_ctx.kwargs:
        return worker_ctx.kwargs[name]
    if index < len(worker_ctx.args):
        return worker_ctx.args[index]
    return None


def base64_size(text: Any) -> int:
    """Decoded size of canonical base64 text, without decoding it (0 for anything else)."""
    if not isinstance(text, str) or not text:
        return 0
    padding = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
    return max(len(text) * 3 // 4 - padding, 0)


class Observability(DependencyProvider):
    """Times, counts and logs every worker of the service's container (see the module doc)."""

    def setup(self) -> None:
        configure_logging(self.container.config)
        quiet_expected_errors(self.container)
        self._started: dict[Any, float] = {}
        self._entrypoints: dict[Any, _Entrypoint] = {}

    def get_dependency(self, worker_ctx: Any) -> None:
        return None

    def worker_setup(self, worker_ctx: Any) -> None:
        self._started[worker_ctx] = time.perf_counter()
        try:
            entry = self._entrypoint(worker_ctx)
            if entry.content_at is not None:
                index, name, key = entry.content_at
                content = _argument(worker_ctx, (index, name))
                if key is not None:
                    content = content.get(key) if isinstance(content, dict) else None
                size = base64_size(content)
                if size:
                    metrics.received_bytes.labels(entry.name).inc(size)
        except Exception:  # instrumentation must never fail a call
            log.exception("could not count the start of %s", worker_ctx)

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        started = self._started.pop(worker_ctx, None)
        try:
            seconds = time.perf_counter() - started if started is not None else 0.0
            self._finished(worker_ctx, result, exc_info, seconds)
        except Exception:  # an exception here would kill the container
            log.exception("could not count the end of %s", worker_ctx)

    def _entrypoint(self, worker_ctx: Any) -> _Entrypoint:
        entrypoint = worker_ctx.entrypoint
        entry = self._entrypoints.get(entrypoint)
        if entry is None:
            entry = self._entrypoints[entrypoint] = self._describe(worker_ctx)
        return entry

    def _describe(self, worker_ctx: Any) -> _Entrypoint:
        entrypoint = worker_ctx.entrypoint
        name = entrypoint.method_name
        method = getattr(type(worker_ctx.service), name, None)
        if isinstance(entrypoint, HttpRequestHandler):
            kind = HTTP
        elif isinstance(entrypoint, Timer):
            kind = TIMER
        elif isinstance(entrypoint, Rpc):
            kind = RPC
        else:
            kind = type(entrypoint).__name__.lower()
        entry = _Entrypoint(kind, name, route=getattr(entrypoint, "url", None))
        if method is not None:
            entry.media_id_at = _parameter(method, MEDIA_ID_PARAMETERS)
            if kind == RPC and name in CONTENT_ARGUMENTS:
                parameter, key = CONTENT_ARGUMENTS[name]
                at = _parameter(method, (parameter,))
                if at is not None:
                    entry.content_at = (*at, key)
        return entry

    def _finished(self, worker_ctx: Any, result: Any, exc_info: Any, seconds: float) -> None:
        entry = self._entrypoint(worker_ctx)
        error = exc_info[1] if exc_info else None
        outcome = "ok" if error is None else type(error).__name__
        status = http_method = request = None
        if entry.kind == HTTP:
            status = _status(result, error)
            request = worker_ctx.args[0] if worker_ctx.args else None
            http_method = getattr(request, "method", None)
            key: Any = (http_method, status)
            children = entry.children.get(key)
            if children is None:
                children = entry.children[key] = (
                    metrics.http_responses.labels(entry.route, http_method, str(status)),
                    metrics.http_duration.labels(entry.route),
                )
        else:
            children = entry.children.get(outcome)
            if children is None:
                counter, histogram = (
                    (metrics.timer_runs, metrics.timer_duration)
                    if entry.kind == TIMER
                    else (metrics.rpc_calls, metrics.rpc_duration)
                )
                children = entry.children[outcome] = (
                    counter.labels(entry.name, outcome),
                    histogram.labels(entry.name),
                )
        children[0].inc()
        children[1].observe(seconds)

        expected = error is None or isinstance(error, worker_ctx.entrypoint.expected_exceptions)
        level = logging.INFO if expected else logging.ERROR
        if not log.isEnabledFor(level):
            return
        stack = worker_ctx.call_id_stack
        fields: dict[str, Any] = {
            "kind": entry.kind,
            "method": entry.name,
            "outcome": outcome,
            "duration_ms": round(seconds * 1000, 3),
            "call_id": worker_ctx.call_id,
            "parent_call_id": stack[-2] if len(stack) > 1 else None,
            "caller": worker_ctx.context_data.get("user_id"),
            "media_id": _media_id(entry, worker_ctx, result),
        }
        if entry.kind == HTTP:
            fields["route"] = entry.route
            fields["http_method"] = http_method
            fields["status"] = status
            fields["client"] = getattr(request, "remote_addr", None)
            message, args = "%s %s %s %s in %.1f ms", [http_method, entry.route, status]
            args.insert(0, entry.name)
        else:
            message, args = "%s %s %s in %.1f ms", [entry.kind, entry.name, outcome]
        args.append(seconds * 1000)
        if error is not None:
            fields["error"] = str(error)
            message += ": %s"
            args.append(fields["error"])
        log.log(level, message, *args, extra=fields)


def _status(result: Any, error: BaseException | None) -> int:
    """The status nameko's web server answers with (nameko.web.handlers.HttpRequestHandler)."""
    if error is not None:
        return 400 if isinstance(error, BadRequest) else 500
    status = getattr(result, "status_code", None)
    if isinstance(status, int):
        return status
    if isinstance(result, tuple) and result and isinstance(result[0], int):
        return result[0]
    return 200


def _media_id(entry: _Entrypoint, worker_ctx: Any, result: Any) -> str | None:
    if entry.media_id_at is not None:
        value = _argument(worker_ctx, entry.media_id_at)
        if isinstance(value, str):
            return value
    if isinstance(result, dict):
        value = result.get("mediaId")
        if value is None and "mimeType" in result:  # a Media record
            value = result.get("id")
        if isinstance(value, str):
            return value
    return None
