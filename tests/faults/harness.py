"""The stream of uploads, the faults injected into it, and the invariants checked after each
round.

A round: a few callers upload for one or two seconds (``upload_file`` over RPC, with and without an
``idempotencyKey``, and tus uploads with tuspy after ``initiateUpload``) while the service
processes what came before; at a random moment inside that stream a fault hits (the service is
SIGKILLed and restarted, PostgreSQL restarts, the broker restarts, or the S3 endpoint goes away
for a moment). Callers then retry what they must (keyed uploads, tus uploads), as real callers
do, and the invariants are checked over everything every round so far has created.
"""

from __future__ import annotations

import collections
import hashlib
import io
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import eventlet
from nameko.events import event_handler
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker
from tusclient import client as tus_client

from services.media.catalog.hygiene import Hygiene
from services.media.catalog.records import MediaCatalog
from services.media.client import media_rpc
from services.media.core.models import (
    Media,
    MediaVariant,
    OutboxEvent,
    UploadPart,
    UploadSession,
)
from services.media.core.settings import MediaSettings
from services.media.core.vocabulary import UPLOAD_EXPIRABLE
from storage import Storage
from tests.files import b64
from tests.images import encode, photo

EVENT_TYPES = ("media_created", "media_updated", "media_processed", "media_processing_failed")
CALL_TIMEOUT = 12.0  # seconds a caller waits for one RPC answer
WORDS = "lecture notes week chapter summary draft final exam syllabus outline figure".split()


class EventRecorder:
    """What a subscriber service is handed: ``(event type, eventId, mediaId)`` in arrival
    order, duplicates included."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None]] = []
        self.service = self._service_class()

    def add(self, event_type: str, payload: dict[str, Any]) -> None:
        media = payload.get("media") or {}
        self.events.append((event_type, payload["eventId"], media.get("id")))

    def event_ids(self, event_type: str) -> dict[str, set[str]]:
        seen: dict[str, set[str]] = collections.defaultdict(set)
        for kind, event_id, media_id in self.events:
            if kind == event_type and media_id is not None:
                seen[media_id].add(event_id)
        return seen

    def _service_class(self) -> type:
        recorder = self

        def handler(event_type: str) -> Callable[..., None]:
            @event_handler("media", event_type)
            def handle(self: Any, payload: dict[str, Any]) -> None:
                recorder.add(event_type, payload)

            handle.__name__ = f"on_{event_type}"
            return handle

        attributes: dict[str, Any] = {f"on_{kind}": handler(kind) for kind in EVENT_TYPES}
        # A queue of its own per test: nothing left over from another test reaches it.
        attributes["name"] = f"media_faults_subscriber_{uuid.uuid4().hex[:8]}"
        return type("FaultSubscriber", (), attributes)


@dataclass
class Attempt:
    """One upload a caller made, and everything it was answered."""

    kind: str  # "rpc", "rpc-key" or "tus"
    round: int
    user: str
    name: str
    content: bytes
    key: str | None
    chunk_size: int | None = None  # tus: bytes per PATCH
    answers: list[str] = field(default_factory=list)  # media ids, one per answer
    errors: list[str] = field(default_factory=list)
    started: dict[str, Any] | None = None  # tus: initiateUpload's answer

    @property
    def checksum(self) -> str:
        return "sha256:" + hashlib.sha256(self.content).hexdigest()

    def upload_data(self) -> dict[str, Any]:
        data = {"content": b64(self.content), "originalName": self.name, "userId": self.user}
        if self.key is not None:
            data["idempotencyKey"] = self.key
        return data

    def initiate_data(self) -> dict[str, Any]:
        return {
            "originalName": self.name,
            "userId": self.user,
            "size": len(self.content),
            "checksum": self.checksum,
            "idempotencyKey": self.key,
        }

    def describe(self) -> str:
        return (
            f"{self.kind} upload #{self.round}/{self.name} ({len(self.content)} B, key "
            f"{self.key}), answers {self.answers}, errors {self.errors[-3:]}"
        )


def make_file(rng: Any) -> tuple[bytes, str]:
    """A small file the upload policy accepts, unique to this call: a noisy PNG (no variants:
    too small), a JPEG photo (processing writes variants of it) or a text file."""
    pick = rng.random()
    if pick < 0.15:
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(20, 200)))
        return f"{words}\n{rng.getrandbits(64):016x}\n".encode(), "notes.txt"
    if pick < 0.4:
        image = photo(rng.randrange(260, 340), rng.randrange(180, 260), seed=rng.randrange(40))
        patch = Image.frombytes("RGB", (8, 8), rng.randbytes(8 * 8 * 3))
        image.paste(patch, (rng.randrange(100), rng.randrange(100)))
        return encode(image, "JPEG", quality=60), "photo.jpg"
    side = rng.randrange(12, 32)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    return encode(image, "PNG"), "dots.png"


class FaultHarness:
    """Drives rounds against one running service and checks the invariants after each."""

    def __init__(
        self,
        *,
        rng: Any,
        amqp_uri: str,
        public_base_url: str,
        sessions: sessionmaker,
        storage: Storage,
        recorder: EventRecorder,
        settings: MediaSettings,
        lease_seconds: float,
        describe_failure: Callable[[], str],
    ) -> None:
        self.rng = rng
        self.config = {"AMQP_URI": amqp_uri, "serializer": "json"}
        self.public_base_url = public_base_url
        self.sessions = sessions
        self.storage = storage
        self.recorder = recorder
        self.lease_seconds = lease_seconds
        self.describe_failure = describe_failure
        # The sweeper as the service runs it, without the grace period: run only while nothing
        # is being written, so that every object it finds unowned really is an orphan.
        self.sweeper = Hygiene(
            MediaCatalog(sessions=sessions, storage=storage, settings=_without_grace(settings))
        )
        self.attempts: list[Attempt] = []
        self.swept_orphans = 0
        self.timeline: list[str] = []

    # -- calling the service, as a sibling service and a tus client would ----------------------

    @contextmanager
    def _rpc(self, user: str) -> Iterator[Any]:
        with media_rpc(self.config, timeout=CALL_TIMEOUT, user_id=user) as media:
            yield media

    def _call(self, attempt: Attempt, call: Callable[[Any], Any]) -> Any:
        """One RPC, bounded; a failure is recorded on the attempt and returned as None."""
        timer = eventlet.Timeout(CALL_TIMEOUT + 10)
        try:
            with self._rpc(attempt.user) as media:
                return call(media)
        except eventlet.Timeout as exc:
            if exc is not timer:
                raise
            attempt.errors.append("no answer at all (connection hung)")
        except Exception as exc:
            attempt.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        finally:
            timer.cancel()
        return None

    def upload_rpc(self, attempt: Attempt) -> bool:
        record = self._call(attempt, lambda media: media.upload_file(attempt.upload_data()))
        if record is None:
            return False
        attempt.answers.append(record["id"])
        if record["checksum"] != attempt.checksum:
            attempt.errors.append(f"answered checksum {record['checksum']}")
        return True

    def upload_tus(self, attempt: Attempt, tries: int) -> bool:
        """initiateUpload (keyed, so a repeat finds the same session), then tuspy resuming the
        session's URL; a try that fails starts over from the server's offset."""
        for number in range(tries):
            if number:
                eventlet.sleep(0.5)
            if attempt.started is None:
                attempt.started = self._call(
                    attempt, lambda media: media.initiateUpload(attempt.initiate_data())
                )
                if attempt.started is None:
                    continue
            media_id = self._send_tus(attempt)
            if media_id is None:
                progress = self._call(
                    attempt,
                    lambda media: media.getUploadProgress(attempt.started["uploadId"]),
                )
                if progress is None:
                    continue
                if progress["status"] != "READY":
                    attempt.errors.append(
                        f"progress {progress['status']} {progress['bytesUploaded']}/"
                        f"{progress['totalBytes']} {progress['failureReason']}"
                    )
                    continue
                media_id = progress["mediaId"]
            attempt.answers.append(media_id)
            return True
        return False

    def _send_tus(self, attempt: Attempt) -> str | None:
        assert attempt.started is not None
        timer = eventlet.Timeout(30)
        try:
            client = tus_client.TusClient(
                f"{self.public_base_url}/uploads",
                headers={"Authorization": f"Bearer {attempt.started['uploadToken']}"},
            )
            uploader = client.uploader(
                file_stream=io.BytesIO(attempt.content),
                url=attempt.started["uploadUrl"],
                chunk_size=attempt.chunk_size or len(attempt.content),
                retries=2,
                retry_delay=1,
            )
            uploader.upload()
            request = uploader.request
            return request.response_headers.get("media-id") if request is not None else None
        except eventlet.Timeout as exc:
            if exc is not timer:
                raise
            attempt.errors.append("tus: no answer at all (connection hung)")
        except Exception as exc:
            attempt.errors.append(f"tus {type(exc).__name__}: {str(exc)[:200]}")
        finally:
            timer.cancel()
        return None

    # -- a round ---------------------------------------------------------------------------------

    def _new_attempt(self, round_number: int, rng: Any) -> Attempt:
        kind = rng.choices(["rpc", "rpc-key", "tus"], weights=[4, 3, 3])[0]
        content, name = make_file(rng)
        key = None if kind == "rpc" else f"k-{rng.getrandbits(64):016x}"
        attempt = Attempt(kind, round_number, f"u-{rng.randrange(3)}", name, content, key)
        if kind == "tus" and rng.random() < 0.5:
            attempt.chunk_size = max(1, len(content) // rng.randrange(2, 4))
        return attempt

    def _stream(self, round_number: int, until: float, rng: Any) -> None:
        while time.monotonic() < until:
            attempt = self._new_attempt(round_number, rng)
            self.attempts.append(attempt)
            if attempt.kind == "tus":
                self.upload_tus(attempt, tries=3)
            else:
                self.upload_rpc(attempt)

    def run_round(self, round_number: int, fault: str, inject: Callable[[], None]) -> None:
        """A stream of uploads from three callers, with ``inject`` called at a random moment
        inside it; then the callers' retries, then the invariants."""
        rng = self.rng
        duration = rng.uniform(0.8, 1.8)
        fault_at = rng.uniform(0.1, duration - 0.1)
        started = time.monotonic()
        until = started + duration
        callers = [eventlet.spawn(self._stream, round_number, until, _child(rng)) for _ in range(3)]
        eventlet.sleep(fault_at)
        line = len(self.timeline)
        self.timeline.append(f"round {round_number}: {fault} at {fault_at:.2f}s of {duration:.2f}s")
        inject()
        injected = time.monotonic()
        for caller in callers:
            caller.wait()
        streamed = time.monotonic()
        self.retry(round_number)
        retried = time.monotonic()
        self.check(round_number, fault)
        self.timeline[line] += (
            f"; fault {injected - started - fault_at:.1f}s, callers done "
            f"+{streamed - injected:.1f}s, retries {retried - streamed:.1f}s, checks "
            f"{time.monotonic() - retried:.1f}s: round {time.monotonic() - started:.1f}s"
        )

    def retry(self, round_number: int) -> None:
        """What real callers do once the service answers again: send a keyed upload that got no
        answer again with the same key, resume a tus upload, and sometimes repeat a keyed
        upload that was answered (its answer lost, as far as that caller knows)."""
        rng = _child(self.rng)

        def one(attempt: Attempt) -> None:
            if attempt.kind == "tus":
                if not attempt.answers:
                    self.upload_tus(attempt, tries=8)
                return
            if attempt.answers and rng.random() < 0.7:
                return
            for _ in range(4):
                if self.upload_rpc(attempt):
                    return
                eventlet.sleep(0.5)

        pool = eventlet.GreenPool(6)
        for attempt in self.attempts:
            if attempt.round == round_number and attempt.key is not None:
                pool.spawn(one, attempt)
        pool.waitall()

    # -- the invariants --------------------------------------------------------------------------

    def check(self, round_number: int, fault: str) -> None:
        problems: list[str] = []
        begun = time.monotonic()
        self._wait_for_processing(problems)
        processed = time.monotonic()
        rows = self._media_rows()
        self._wait_for_events(rows)
        self.timeline.append(
            f"  processing settled in {processed - begun:.1f}s, events in "
            f"{time.monotonic() - processed:.1f}s"
        )
        self._check_answers(rows, problems)
        self._check_events(rows, problems)
        self._check_bytes(rows, problems)
        self._check_no_duplicates(rows, problems)
        self._check_sweep(problems)
        if problems:
            raise AssertionError(
                f"round {round_number} ({fault}) broke {len(problems)} invariant(s):\n  "
                + "\n  ".join(problems[:40])
                + f"\n{self.describe_failure()}"
            )

    def _media_rows(self) -> dict[str, Media]:
        with self.sessions() as session:
            return {media.id: media for media in session.scalars(select(Media))}

    def _wait_for_processing(self, problems: list[str]) -> None:
        """No job is left PROCESSING once its lease has run out: killed workers' jobs are taken
        over after the lease, and nothing else holds a job longer than that."""
        deadline = time.monotonic() + self.lease_seconds + 12
        while True:
            with self.sessions() as session:
                left = session.execute(
                    select(Media.id, Media.processing_lease_until, Media.processing_attempts).where(
                        Media.status == "PROCESSING"
                    )
                ).all()
            if not left:
                return
            if time.monotonic() > deadline:
                problems.append(
                    f"{len(left)} media still PROCESSING {self.lease_seconds + 12:.0f}s after "
                    f"the round (lease {self.lease_seconds}s): "
                    + ", ".join(f"{m} lease_until={u} attempts={a}" for m, u, a in left[:5])
                )
                return
            eventlet.sleep(0.2)

    def _wait_for_events(self, rows: dict[str, Media]) -> None:
        # A subscriber reconnecting after a broker restart backs off for a while under load.
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            seen = self.recorder.event_ids("media_created")
            if all(media_id in seen for media_id in rows):
                break
            eventlet.sleep(0.1)
        eventlet.sleep(0.3)  # a duplicate on its way would arrive by now

    def _outbox_state(self, media_id: str) -> str:
        """Whether the service still owes the event (pending) or handed it to the broker."""
        with self.sessions() as session:
            rows = session.execute(
                select(OutboxEvent.id, OutboxEvent.published_at, OutboxEvent.attempts).where(
                    OutboxEvent.event_type == "media_created"
                )
            ).all()
            payloads = {
                row.id: session.get(OutboxEvent, row.id).payload.get("media", {}).get("id")
                for row in rows
            }
        mine = [row for row in rows if payloads[row.id] == media_id]
        if not mine:
            return "no row"
        return ", ".join(
            f"{row.id} published_at={row.published_at} attempts={row.attempts}" for row in mine
        )

    def _check_answers(self, rows: dict[str, Media], problems: list[str]) -> None:
        for attempt in self.attempts:
            if len(set(attempt.answers)) > 1:
                problems.append(f"one request, several media: {attempt.describe()}")
            for media_id in set(attempt.answers):
                media = rows.get(media_id)
                if media is None:
                    problems.append(f"answered media {media_id} has no row: {attempt.describe()}")
                elif media.checksum != attempt.checksum or media.size != len(attempt.content):
                    problems.append(
                        f"media {media_id} is {media.size} B {media.checksum}, the caller sent "
                        f"{attempt.checksum}: {attempt.describe()}"
                    )
            if attempt.key is not None and not attempt.answers:
                problems.append(
                    "a keyed upload never succeeded, retries included: "
                    f"{attempt.describe()}{self._session_state(attempt)}"
                )
            if any(error.startswith("answered checksum") for error in attempt.errors):
                problems.append(f"answered with another checksum: {attempt.describe()}")

    def _session_state(self, attempt: Attempt) -> str:
        if attempt.started is None:
            return ""
        with self.sessions() as session:
            upload = session.get(UploadSession, attempt.started["uploadId"])
            if upload is None:
                return f"; no session row {attempt.started['uploadId']}"
            parts = session.execute(
                select(UploadPart.number, UploadPart.size).where(UploadPart.session_id == upload.id)
            ).all()
            return (
                f"; session {upload.id} {upload.status} size={upload.size} "
                f"tail={upload.tail_key}/{upload.tail_size} seq={upload.append_seq} "
                f"parts={parts} media={upload.media_id} reason={upload.failure_reason}"
            )

    def _check_events(self, rows: dict[str, Media], problems: list[str]) -> None:
        created = self.recorder.event_ids("media_created")
        for media_id in rows:
            count = len(created.get(media_id, ()))
            if count != 1:
                problems.append(
                    f"media {media_id} has {count} distinct media_created events "
                    f"(in the outbox: {self._outbox_state(media_id)})"
                )
        for media_id in created:
            if media_id not in rows:
                problems.append(f"media_created for {media_id}, which has no row")
        finished: dict[str, set[str]] = collections.defaultdict(set)
        for kind in ("media_processed", "media_processing_failed"):
            for media_id, ids in self.recorder.event_ids(kind).items():
                finished[media_id] |= ids
        for media_id, ids in finished.items():
            if len(ids) > 1:
                problems.append(f"media {media_id} finished processing {len(ids)} times")

    def _check_bytes(self, rows: dict[str, Media], problems: list[str]) -> None:
        """No record without bytes, and the bytes are the ones the caller sent."""
        for media in rows.values():
            if media.storage_key is None:
                problems.append(f"media {media.id} has no storage key")
                continue
            digest = hashlib.sha256()
            try:
                for chunk in self.storage.iter_chunks(media.storage_key):
                    digest.update(chunk)
            except Exception as exc:
                problems.append(f"media {media.id} ({media.status}): bytes unreadable: {exc!r}")
                continue
            if "sha256:" + digest.hexdigest() != media.checksum:
                problems.append(f"media {media.id}: stored bytes do not match {media.checksum}")
        with self.sessions() as session:
            variants = session.execute(select(MediaVariant.media_id, MediaVariant.storage_key))
            for media_id, key in variants:
                if not self.storage.exists(key):
                    problems.append(f"variant {key} of media {media_id} has no bytes")

    def _check_no_duplicates(self, rows: dict[str, Media], problems: list[str]) -> None:
        """Every file a caller made is unique, so one checksum is at most one record: neither a
        caller's retry with its key nor the broker's redelivery of a request made a second."""
        for checksum, count in collections.Counter(m.checksum for m in rows.values()).items():
            if count > 1:
                owners = [m.id for m in rows.values() if m.checksum == checksum]
                problems.append(f"{count} records of one upload ({checksum}): {owners}")
        with self.sessions() as session:
            sessions_per_key = session.execute(
                select(UploadSession.request_key, func.count())
                .where(UploadSession.request_kind == "caller")
                .group_by(UploadSession.request_key)
                .having(func.count() > 1)
            ).all()
        for key, count in sessions_per_key:
            problems.append(f"{count} upload sessions for idempotency key {key}")

    def _check_sweep(self, problems: list[str]) -> None:
        """After a sweep (no grace period) no bytes are left that nothing owns, and the sweeper
        finds no record whose bytes are missing."""
        self.swept_orphans += self.sweeper.sweep_orphans()
        marked = self.sweeper.mark_missing_bytes()
        if marked:
            problems.append(f"the sweeper marked {marked} media FAILED: their bytes are missing")
        with self.sessions() as session:
            owned = set(session.scalars(select(Media.storage_key)))
            owned |= set(session.scalars(select(MediaVariant.storage_key)))
            for column in (UploadSession.storage_key, UploadSession.tail_key):
                owned |= set(
                    session.scalars(
                        select(column).where(UploadSession.status.in_(UPLOAD_EXPIRABLE))
                    )
                )
        unowned = [
            info.key for info in self.storage.iter_objects("media/") if info.key not in owned
        ]
        if unowned:
            problems.append(
                f"{len(unowned)} stored objects without a record after the sweep: {unowned[:5]}"
            )

    def summary(self) -> str:
        kinds = collections.Counter(a.kind for a in self.attempts)
        answered = sum(1 for a in self.attempts if a.answers)
        return (
            f"{len(self.attempts)} uploads ({dict(kinds)}), {answered} answered with a media, "
            f"{self.swept_orphans} orphans swept"
        )


def _child(rng: Any) -> Any:
    """A generator of its own for a green thread, seeded from ``rng``: the choices each caller
    makes do not depend on how the threads interleave."""
    return type(rng)(rng.getrandbits(64))


def _without_grace(settings: MediaSettings) -> MediaSettings:
    return replace(settings, orphan_grace=timedelta(0))
