"""The plain arguments of RPC methods: ids, and the queries of ``find*``."""

from __future__ import annotations

from typing import Any

from schemas import load
from schemas.media import QUERY
from services.media.exceptions import ValidationError

_WIRE_NAMES = {"user_id": "userId", "entity_type": "entityType", "entity_id": "entityId"}


def text(name: str, value: Any) -> str:
    """An id-like argument: a string of 1 to 255 characters."""
    if not isinstance(value, str) or not value or len(value) > 255:
        raise ValidationError.for_field(name, "Must be a string of 1 to 255 characters.")
    return value


def find_query(query: Any, **fixed: str) -> dict[str, Any]:
    """A ``find*`` query; the method's own arguments win over (and must agree with) it."""
    filters = load(QUERY, query, argument="query")
    for name, value in fixed.items():
        if name in filters and filters[name] != value:
            raise ValidationError.for_field(
                f"query.{_WIRE_NAMES[name]}", "Contradicts the method's own argument."
            )
        filters[name] = value
    return filters
