"""The ``gateway`` service (issue 21, CONTRACT section 14): REST and multipart uploads over HTTP
for browsers and other platforms, JWT checks, every route an RPC call to ``media``.

Nothing here yet. It holds no data and may import only ``services.media.client`` and
``services.media.exceptions``.
"""
