"""What an upload is before anything is stored.

Content sniffing from the bytes, never from names or declared types (``sniffing``), and the
upload policy: size caps, base64, the policy per media type, and the checks of ``upload_file``
that run off the event loop (``policy``), whose image header check is the one Pillow gate of
``processing.imaging``.

May import: ``core``, ``services.media.exceptions``, ``processing.imaging`` (its gate).
Never nameko, werkzeug, eventlet, the database or storage.
"""
