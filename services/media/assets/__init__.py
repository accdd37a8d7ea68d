"""Asset operations (issue 20, CONTRACT section 13): imports from URLs, versions, archives and
webhooks.

Nothing here yet. It may import ``core``, ``catalog``'s public face, ``ingest`` and ``storage``,
never nameko.
"""
