"""Who is calling, from nameko context data, and what they may do."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ADMIN_ROLE = "admin"
# The nameko context data keys that carry the caller's identity.
IDENTITY_CONTEXT_KEYS = ("user_id", "roles")


@dataclass(frozen=True)
class Caller:
    """The identity a call acts for. No ``user_id`` means a trusted internal call."""

    user_id: str | None = None
    roles: frozenset[str] = frozenset()

    @classmethod
    def from_context(cls, user_id: object, roles: object) -> Caller:
        role_set: frozenset[str] = frozenset()
        if isinstance(roles, str):
            role_set = frozenset([roles])
        elif isinstance(roles, Iterable):
            role_set = frozenset(str(role) for role in roles)
        return cls(user_id=str(user_id) if user_id not in (None, "") else None, roles=role_set)

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles

    @property
    def is_trusted(self) -> bool:
        """Internal calls and admins see and change everything."""
        return self.user_id is None or self.is_admin

    def owns(self, owner_id: str | None) -> bool:
        return self.is_trusted or owner_id == self.user_id


INTERNAL = Caller()
