"""Service settings, read once from the nameko config (itself filled from the environment)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from services.media.sniffing import MediaType

DEV_KEY_FILE = Path("var/dev-url-signing-key")


class ConfigurationError(Exception):
    """The service must not start with this configuration."""


@dataclass(frozen=True)
class TypePolicy:
    max_bytes: int
    mime_types: frozenset[str]


@dataclass(frozen=True)
class MediaSettings:
    public_base_url: str
    url_signing_key: bytes
    url_signing_key_id: str = "k1"
    retention: timedelta = timedelta(days=30)
    rpc_max_content_bytes: int = 11 * 1024 * 1024
    upload_policy: dict[MediaType, TypePolicy] = field(default_factory=dict)
    private_url_ttl: timedelta = timedelta(hours=1)
    outbox_interval_seconds: float = 1.0
    purge_interval_seconds: float = 300.0

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
            retention=timedelta(days=float(media.get("retention_days", 30))),
            rpc_max_content_bytes=int(media.get("rpc_max_content_bytes", 11 * 1024 * 1024)),
            upload_policy=policy,
            outbox_interval_seconds=float(media.get("outbox_interval_seconds", 1.0)),
            purge_interval_seconds=float(media.get("purge_interval_seconds", 300)),
        )


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


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
