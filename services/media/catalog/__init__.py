"""Media records.

Creating them (with idempotency and delivery keys), finding them (queries and keyset pages in
``pagination``), changing and removing them, presenting them on the wire, and the hygiene of
storage and retention (the sweeper and the purge), all in ``records``.

May import: ``core``, ``ingest``, ``delivery.urls`` (the links a record carries),
``services.media.exceptions``, ``storage``. Never nameko, werkzeug or eventlet: the service
hands in ``offload`` and ``spawn``.
"""
