"""The shared kernel every capability stands on.

Identifiers and time (``ids``), who is calling (``identity``), settings (``settings``), the
database schema and engine (``models``, ``database``), the transactional outbox (``outbox``)
and the metric objects (``metrics``).

May import: the standard library, SQLAlchemy, ``services.media.exceptions`` and, for settings,
the image recipes of ``processing.imaging``. Never nameko, werkzeug or eventlet, and none of
the capability packages' workings.
"""
