"""Opaque keyset cursors: page N costs what page 1 costs; paging never skips or repeats a row."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, literal, tuple_

from services.media.core.ids import isoformat_z
from services.media.core.models import Media
from services.media.exceptions import ValidationError

_SORT_COLUMNS = {
    "createdAt": Media.created_at,
    "size": Media.size,
    "originalName": Media.original_name,
}


@dataclass(frozen=True)
class SortOrder:
    name: str
    descending: bool

    @classmethod
    def parse(cls, sort: str) -> SortOrder:
        return cls(name=sort.lstrip("-"), descending=sort.startswith("-"))

    @property
    def column(self) -> Any:
        return _SORT_COLUMNS[self.name]

    @property
    def token(self) -> str:
        return f"-{self.name}" if self.descending else self.name

    def apply(self, query: Select[Any], cursor: str | None) -> Select[Any]:
        key = tuple_(self.column, Media.id)
        if cursor is not None:
            bound = tuple_(*(literal(value) for value in self._decode(cursor)))
            query = query.where(key < bound if self.descending else key > bound)
        if self.descending:
            return query.order_by(self.column.desc(), Media.id.desc())
        return query.order_by(self.column.asc(), Media.id.asc())

    def cursor_after(self, media: Media) -> str:
        value: Any = getattr(media, self.column.key)
        if isinstance(value, datetime):
            value = isoformat_z(value)
        raw = json.dumps([self.token, value, media.id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def _decode(self, cursor: str) -> tuple[Any, str]:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            token, value, media_id = json.loads(raw)
        except (ValueError, TypeError):
            raise ValidationError.for_field("cursor", "Not a cursor this service issued.") from None
        if token != self.token:
            raise ValidationError.for_field(
                "cursor", f"The cursor belongs to sort {token!r}, not {self.token!r}."
            )
        if not isinstance(media_id, str):
            raise ValidationError.for_field("cursor", "Not a cursor this service issued.")
        return self._typed(value), media_id

    def _typed(self, value: Any) -> Any:
        bad = ValidationError.for_field("cursor", "Not a cursor this service issued.")
        if self.name == "createdAt":
            if not isinstance(value, str) or not value.endswith("Z"):
                raise bad
            try:
                return datetime.fromisoformat(value[:-1])
            except ValueError:
                raise bad from None
        if self.name == "size":
            if not isinstance(value, int) or isinstance(value, bool):
                raise bad
            return value
        if not isinstance(value, str):
            raise bad
        return value
