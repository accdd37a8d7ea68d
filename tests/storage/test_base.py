"""Key helpers and error types shared by every backend."""

from __future__ import annotations

import pickle
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from storage import InvalidKey, ObjectNotFound, StorageUnavailable, new_key, validate_key

KEY_RE = re.compile(r"media/\d{4}/\d{2}/\d{2}/[0-9a-f]{32}")


def test_new_key_format_and_uniqueness() -> None:
    keys = {new_key() for _ in range(10_000)}
    assert len(keys) == 10_000
    for key in keys:
        assert KEY_RE.fullmatch(key), key
        assert validate_key(key) == key


def test_new_key_uses_the_utc_date_of_now() -> None:
    assert new_key(datetime(2024, 3, 9, 12, tzinfo=UTC)).startswith("media/2024/03/09/")
    late_in_new_york = datetime(2024, 3, 9, 22, tzinfo=timezone(timedelta(hours=-5)))
    assert new_key(late_in_new_york).startswith("media/2024/03/10/")


@pytest.mark.parametrize(
    "key",
    [
        "../x",
        "a/../b",
        "/abs",
        "a//b",
        "a\\b",
        "a\x00b",
        "",
        ".",
        "a/./b",
        "a/",
        "a/..",
        "-a",
        "a b",
        "a\n",
        "k" * 513,
    ],
)
def test_validate_key_rejects(key: str) -> None:
    with pytest.raises(InvalidKey) as info:
        validate_key(key)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith("invalid key ")


@pytest.mark.parametrize("key", ["a", "A9._-/x", "media/2024/01/02/abc", "k" * 512, "a/.b"])
def test_validate_key_accepts(key: str) -> None:
    assert validate_key(key) == key


def test_invalid_key_message_says_why() -> None:
    with pytest.raises(InvalidKey, match=re.escape("'..' path segment")):
        validate_key("a/../b")
    with pytest.raises(InvalidKey, match="longer than 512"):
        validate_key("k" * 513)


def test_errors_survive_pickling() -> None:
    for error in (
        ObjectNotFound("media/x"),
        InvalidKey("a//b", "has an empty path segment"),
        StorageUnavailable("disk full"),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
    assert str(ObjectNotFound("media/x")) == "object 'media/x' not found"
