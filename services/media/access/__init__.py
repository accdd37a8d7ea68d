"""Policies per context and shared access (issue 18, CONTRACT section 11): named upload
policies, grants to users and groups, owner cascades, retention.

Nothing here yet; who is calling is ``core.identity``. It may import ``core`` and ``ingest``,
never nameko.
"""
