"""Wire schemas of the media service, and the one way to load arguments with them."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema
from marshmallow import ValidationError as SchemaError

from services.media.exceptions import ValidationError


def load(schema: Schema, data: Any, *, argument: str = "data") -> dict[str, Any]:
    """Validate ``data`` with ``schema``; any problem becomes the contract's ``ValidationError``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidationError.for_field(argument, "Must be a JSON object.")
    try:
        return schema.load(data)
    except SchemaError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {argument: exc.messages}
        if "_schema" in messages:
            messages = dict(messages)
            messages[argument] = messages.pop("_schema")
        raise ValidationError.from_fields(messages) from None


__all__ = ["load"]
