"""Usage, limits and analytics (issue 11, CONTRACT section 8): counters per user and type kept
in the transaction of every change, tiers, race-safe quotas, bandwidth and per-media stats.

Nothing here yet. It may import ``core`` and ``catalog``'s public face, never nameko.
"""
