"""Getting bytes to callers.

Links (``urls``: stable public URLs, signed expiring links, key rotation, presigned URLs where
the backend has them), what a served file says about itself (``serving``: content type,
disposition, ranges, ETags), and the file endpoint's HTTP answers (``files``, the one module
here that speaks HTTP through werkzeug). Images rendered on request will land in
``delivery/transforms``.

May import: ``core``, ``services.media.exceptions``, ``storage``. Never nameko or the catalog.
"""
