"""Configuration: what the service refuses to start with, and how identity is read."""

from __future__ import annotations

import pytest

from services.media.core.identity import Caller
from services.media.core.settings import ConfigurationError, MediaSettings
from services.media.core.vocabulary import MediaType
from tests.conftest import load_config


def test_refuses_to_start_without_a_signing_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="URL_SIGNING_KEY is not set"):
        MediaSettings.from_config(load_config(URL_SIGNING_KEY="", MEDIA_DEV_MODE="false"))


def test_dev_mode_keeps_one_key_across_restarts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(URL_SIGNING_KEY="", MEDIA_DEV_MODE="true")
    first = MediaSettings.from_config(config).url_signing_key
    assert len(first) >= 32
    assert MediaSettings.from_config(config).url_signing_key == first
    assert (tmp_path / "var" / "dev-url-signing-key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("secret", ["0123", "yes", "null", "a #b", "{x: 1}"])
def test_secrets_are_taken_verbatim_from_the_environment(secret):
    settings = MediaSettings.from_config(load_config(URL_SIGNING_KEY=secret))
    assert settings.url_signing_key == secret.encode()


def test_config_yml_defaults_and_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(URL_SIGNING_KEY="s3cret", MEDIA_RETENTION_DAYS="7")
    settings = MediaSettings.from_config(config)
    assert settings.url_signing_key == b"s3cret"
    assert settings.retention.days == 7
    assert config["DB_URIS"]["media:Base"] == "sqlite:///var/media.db"
    assert config["STORAGE_BACKEND"] == "local"
    assert config["AMQP_URI"] == "amqp://guest:guest@localhost:5672/"
    assert config["max_workers"] == 10
    assert "image/png" in settings.upload_policy[MediaType.IMAGE].mime_types
    assert "text/html" not in {
        m for rule in settings.upload_policy.values() for m in rule.mime_types
    }
    # Fits RabbitMQ 4's 16 MiB message limit once base64-encoded.
    assert settings.rpc_max_content_bytes * 4 / 3 < 16 * 1024 * 1024 - 64 * 1024
    assert settings.user_quota_bytes is None and settings.upload_cors_origin == "*"
    assert settings.upload_token_ttl.total_seconds() == 6 * 3600


def test_upload_settings_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(
        URL_SIGNING_KEY="s3cret",
        MEDIA_USER_QUOTA_BYTES="1000000",
        MEDIA_UPLOAD_CORS_ORIGIN="https://app.example",
        MEDIA_UPLOAD_TOKEN_TTL="600",
        MEDIA_UPLOAD_READ_TIMEOUT="5",
    )
    settings = MediaSettings.from_config(config)
    assert settings.user_quota_bytes == 1_000_000
    assert settings.upload_cors_origin == "https://app.example"
    assert settings.upload_token_ttl.total_seconds() == 600
    assert settings.upload_read_timeout.total_seconds() == 5


@pytest.mark.parametrize(
    ("user_id", "roles", "expected"),
    [
        ("u-1", ["admin"], Caller("u-1", frozenset({"admin"}))),
        ("u-1", "admin", Caller("u-1", frozenset({"admin"}))),
        ("u-1", None, Caller("u-1")),
        (None, None, Caller()),
        ("", ["x"], Caller(None, frozenset({"x"}))),
        (7, [], Caller("7")),
    ],
)
def test_caller_from_context(user_id, roles, expected):
    assert Caller.from_context(user_id, roles) == expected


def test_access_rules():
    assert Caller().is_trusted and Caller("a", frozenset({"admin"})).is_trusted
    assert not Caller("a").is_trusted
    assert Caller("a").owns("a") and not Caller("a").owns("b")


def test_previous_signing_key(tmp_path, monkeypatch):
    config = load_config(
        URL_SIGNING_KEY="new",
        URL_SIGNING_KEY_ID="k2",
        URL_SIGNING_PREVIOUS_KEY="old",
        URL_SIGNING_PREVIOUS_KEY_ID="k1",
        URL_SIGNING_PREVIOUS_KEY_UNTIL="2026-11-28T00:00:00Z",
    )
    keys = MediaSettings.from_config(config).signing_keys
    assert keys["k2"].secret == b"new" and keys["k2"].accepted_until is None
    assert keys["k1"].secret == b"old"
    assert keys["k1"].accepted_until.isoformat() == "2026-11-28T00:00:00+00:00"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"URL_SIGNING_PREVIOUS_KEY_ID": "k0"}, "URL_SIGNING_PREVIOUS_KEY_UNTIL"),
        ({"URL_SIGNING_PREVIOUS_KEY_UNTIL": "2026-11-28"}, "URL_SIGNING_PREVIOUS_KEY_ID"),
        (
            {"URL_SIGNING_PREVIOUS_KEY_ID": "k1", "URL_SIGNING_PREVIOUS_KEY_UNTIL": "2026-11-28"},
            "its own key id",
        ),
        (
            {"URL_SIGNING_PREVIOUS_KEY_ID": "k0", "URL_SIGNING_PREVIOUS_KEY_UNTIL": "next week"},
            "not an ISO-8601 time",
        ),
    ],
)
def test_previous_signing_key_misconfigured(env, message):
    config = load_config(URL_SIGNING_KEY="new", URL_SIGNING_PREVIOUS_KEY="old", **env)
    with pytest.raises(ConfigurationError, match=message):
        MediaSettings.from_config(config)


@pytest.mark.parametrize(
    ("env", "seconds"),
    [("", [10, 60, 300]), ("1", [1]), ("5,30", [5, 30]), ("0.5, 2", [0.5, 2])],
)
def test_processing_retry_delays_from_the_environment(env, seconds):
    config = load_config(
        URL_SIGNING_KEY="k", **({"MEDIA_PROCESSING_RETRY_DELAYS": env} if env else {})
    )
    delays = MediaSettings.from_config(config).processing_retry_delays
    assert [delay.total_seconds() for delay in delays] == seconds


@pytest.mark.parametrize("env", ["soon", "5,-1", "5,,6"])
def test_bad_processing_retry_delays_stop_the_start(env):
    with pytest.raises(ConfigurationError, match="processing_retry_delays_seconds"):
        MediaSettings.from_config(
            load_config(URL_SIGNING_KEY="k", MEDIA_PROCESSING_RETRY_DELAYS=env)
        )
