"""The media service. ``nameko run services.media`` finds :class:`MediaService` here.

The service class is imported lazily, so that sibling services importing only
``services.media.client`` (or ``exceptions``) do not load the whole service with it.
"""

from typing import Any

__all__ = ["MediaService"]


def __getattr__(name: str) -> Any:
    if name == "MediaService":
        from services.media.service import MediaService

        return MediaService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
