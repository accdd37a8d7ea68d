"""The nameko side of identifying a request message, without a broker."""

from __future__ import annotations

from types import SimpleNamespace

from services.media.dependencies import DELIVERY_CONTEXT_KEY, DeliveredRpc


def _message(correlation_id: str | None, **headers: str) -> SimpleNamespace:
    return SimpleNamespace(headers=headers, properties={"correlation_id": correlation_id})


def test_the_correlation_id_identifies_the_request_message() -> None:
    data = DeliveredRpc().unpack_message_headers(_message("8b1c", **{"nameko.user_id": "u-1"}))
    assert data == {"user_id": "u-1", DELIVERY_CONTEXT_KEY: "8b1c"}


def test_a_caller_cannot_name_the_delivery_in_its_headers() -> None:
    smuggled = {f"nameko.{DELIVERY_CONTEXT_KEY}": "someone-elses"}
    assert DELIVERY_CONTEXT_KEY not in DeliveredRpc().unpack_message_headers(
        _message(None, **smuggled)
    )
    data = DeliveredRpc().unpack_message_headers(_message("mine", **smuggled))
    assert data[DELIVERY_CONTEXT_KEY] == "mine"


def test_a_correlation_id_too_long_for_the_key_columns_is_not_used() -> None:
    data = DeliveredRpc().unpack_message_headers(_message("x" * 256))
    assert DELIVERY_CONTEXT_KEY not in data
    assert DeliveredRpc().unpack_message_headers(_message("x" * 255))[DELIVERY_CONTEXT_KEY]
