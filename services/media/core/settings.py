"""Service settings, read once from the nameko config (itself filled from the environment)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.media.core.vocabulary import MediaType
from services.media.processing.imaging import (
    DEFAULT_LIMITS,
    DEFAULT_RECIPES,
    ImagingLimits,
    VariantRecipe,
    recipes_from_config,
)

DEV_KEY_FILE = Path("var/dev-url-signing-key")


class ConfigurationError(Exception):
    """The service must not start with this configuration."""


@dataclass(frozen=True)
class TypePolicy:
    max_bytes: int
    mime_types: frozenset[str]


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    secret: bytes
    # A previous key is still accepted until then, so links it signed keep working.
    accepted_until: datetime | None = None


@dataclass(frozen=True)
class MediaSettings:
    public_base_url: str
    url_signing_key: bytes
    url_signing_key_id: str = "k1"
    previous_signing_key: SigningKey | None = None
    retention: timedelta = timedelta(days=30)
    rpc_max_content_bytes: int = 11 * 1024 * 1024
    upload_policy: dict[MediaType, TypePolicy] = field(default_factory=dict)
    private_url_ttl: timedelta = timedelta(hours=1)
    max_url_ttl: timedelta = timedelta(days=7)
    orphan_grace: timedelta = timedelta(hours=1)
    # Parts of upload sessions: 8 MiB fits the RPC cap once base64-encoded, and is above S3's
    # 5 MiB minimum part size, so every part maps to one multipart part.
    upload_chunk_size: int = 8 * 1024 * 1024
    upload_idle: timedelta = timedelta(hours=24)
    # Bearer tokens for the HTTP (tus) side of one upload session; renewUploadToken gives more.
    upload_token_ttl: timedelta = timedelta(hours=6)
    # A streamed request body that sends nothing for this long is taken as a dropped connection.
    upload_read_timeout: timedelta = timedelta(seconds=60)
    # Origins whose pages may upload with tus from a browser; the token, not cookies, authorises.
    upload_cors_origin: str = "*"
    # Bytes a user may keep (media not deleted plus uploads under way); None: no quota.
    user_quota_bytes: int | None = None
    # Processing: the preset variants every image gets, what an image may be before it is
    # decoded, how long a worker holds a job before another may take it over, how often a job is
    # tried before its media is FAILED, and the time limit of every external tool call.
    variant_recipes: tuple[VariantRecipe, ...] = DEFAULT_RECIPES
    image_limits: ImagingLimits = DEFAULT_LIMITS
    processing_lease: timedelta = timedelta(minutes=10)
    processing_max_attempts: int = 5
    # A job that failed for a reason outside the file (storage, database, a tool that would not
    # start) waits this long before its next attempt: the n-th retry waits the n-th delay, the
    # last one repeating.
    processing_retry_delays: tuple[timedelta, ...] = (
        timedelta(seconds=10),
        timedelta(minutes=1),
        timedelta(minutes=5),
    )
    tool_timeout_seconds: float = 60.0

    @property
    def signing_keys(self) -> dict[str, SigningKey]:
        """Every key a link may be signed with, by key id."""
        keys = {self.url_signing_key_id: SigningKey(self.url_signing_key_id, self.url_signing_key)}
        if self.previous_signing_key is not None:
            keys.setdefault(self.previous_signing_key.key_id, self.previous_signing_key)
        return keys

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MediaSettings:
        media = config.get("MEDIA") or {}
        policy = {
            MediaType(name): TypePolicy(
                max_bytes=int(rule["max_bytes"]),
                mime_types=frozenset(str(m).lower() for m in rule["mime_types"]),
            )
            for name, rule in (media.get("upload_policy") or {}).items()
        }
        return cls(
            public_base_url=str(config.get("PUBLIC_BASE_URL") or "http://localhost:8000").rstrip(
                "/"
            ),
            url_signing_key=_signing_key(config),
            url_signing_key_id=str(config.get("URL_SIGNING_KEY_ID") or "k1"),
            previous_signing_key=_previous_signing_key(config),
            retention=timedelta(days=float(media.get("retention_days", 30))),
            rpc_max_content_bytes=int(media.get("rpc_max_content_bytes", 11 * 1024 * 1024)),
            upload_policy=policy,
            orphan_grace=timedelta(seconds=float(media.get("orphan_grace_seconds", 3600))),
            upload_idle=timedelta(seconds=float(media.get("upload_idle_seconds", 86400))),
            upload_token_ttl=timedelta(
                seconds=float(media.get("upload_token_ttl_seconds", 6 * 3600))
            ),
            upload_read_timeout=timedelta(
                seconds=float(media.get("upload_read_timeout_seconds", 60))
            ),
            upload_cors_origin=str(media.get("upload_cors_origin") or "*"),
            user_quota_bytes=_optional_int(media.get("user_quota_bytes")),
            variant_recipes=_recipes(media.get("variants")),
            image_limits=ImagingLimits(
                max_pixels=int(media.get("image_max_pixels", DEFAULT_LIMITS.max_pixels))
            ),
            processing_lease=timedelta(seconds=float(media.get("processing_lease_seconds", 600))),
            processing_max_attempts=int(media.get("processing_max_attempts", 5)),
            processing_retry_delays=_delays(media.get("processing_retry_delays_seconds")),
            tool_timeout_seconds=float(media.get("tool_timeout_seconds", 60)),
        )


def _recipes(block: Any) -> tuple[VariantRecipe, ...]:
    if block is None:
        return DEFAULT_RECIPES
    try:
        return tuple(recipes_from_config(block))
    except ValueError as exc:
        raise ConfigurationError(f"MEDIA.variants is invalid: {exc}") from None


def _delays(value: Any) -> tuple[timedelta, ...]:
    """Seconds as a YAML list or a comma-separated string (from one environment variable)."""
    if value in (None, ""):
        return MediaSettings.processing_retry_delays
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value]  # one delay: YAML reads "10" as a number
    items = value.split(",") if isinstance(value, str) else value
    try:
        delays = tuple(timedelta(seconds=float(item)) for item in items)
    except (TypeError, ValueError):
        delays = ()
    if not delays or any(delay.total_seconds() < 0 for delay in delays):
        raise ConfigurationError(
            f"MEDIA.processing_retry_delays_seconds must be a list of seconds, not {value!r}"
        )
    return delays


def _optional_int(value: Any) -> int | None:
    if value in (None, "", "null", "none"):
        return None
    return int(value)


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _previous_signing_key(config: dict[str, Any]) -> SigningKey | None:
    secret = config.get("URL_SIGNING_PREVIOUS_KEY")
    if not secret:
        return None
    key_id = config.get("URL_SIGNING_PREVIOUS_KEY_ID")
    until = config.get("URL_SIGNING_PREVIOUS_KEY_UNTIL")
    if not key_id or not until:
        raise ConfigurationError(
            "URL_SIGNING_PREVIOUS_KEY needs URL_SIGNING_PREVIOUS_KEY_ID and "
            "URL_SIGNING_PREVIOUS_KEY_UNTIL (when links it signed stop working)"
        )
    if str(key_id) == str(config.get("URL_SIGNING_KEY_ID") or "k1"):
        raise ConfigurationError("the previous signing key needs its own key id")
    try:
        accepted_until = datetime.fromisoformat(str(until).replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(
            f"URL_SIGNING_PREVIOUS_KEY_UNTIL is not an ISO-8601 time: {until!r}"
        ) from None
    if accepted_until.tzinfo is None:
        accepted_until = accepted_until.replace(tzinfo=UTC)
    return SigningKey(str(key_id), str(secret).encode(), accepted_until)


def _signing_key(config: dict[str, Any]) -> bytes:
    key = config.get("URL_SIGNING_KEY")
    if key:
        return str(key).encode()
    if not _truthy(config.get("MEDIA_DEV_MODE", False)):
        raise ConfigurationError(
            "URL_SIGNING_KEY is not set. Set it to a long random secret, or set "
            "MEDIA_DEV_MODE=true for a development key kept under ./var/."
        )
    # A dev key that survives restarts, so links handed out keep working while developing.
    DEV_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
    if not DEV_KEY_FILE.exists():
        fd = os.open(DEV_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return DEV_KEY_FILE.read_text().strip().encode()
