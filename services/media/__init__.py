"""The media service. ``nameko run services.media`` finds :class:`MediaService` here."""

from services.media.service import MediaService

__all__ = ["MediaService"]
