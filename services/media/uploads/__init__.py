"""Files of any size.

Upload sessions over RPC, streamed parts and direct-to-storage parts, verification and
completion into a record (``sessions``), and the tus 1.0 protocol on ``/uploads`` (``tus``, the
one module here that speaks HTTP through werkzeug).

May import: ``core``, ``catalog`` (its public face), ``ingest``, ``delivery.urls`` (upload
tokens), ``services.media.exceptions``, ``storage``. Never nameko or eventlet.
"""
