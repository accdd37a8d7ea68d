"""Images rendered on request (issue 19, CONTRACT section 12): signed transformation URLs,
format negotiation, a rendering cache with a byte budget.

Nothing here yet. It may import ``core``, ``delivery``, ``processing.imaging`` and ``storage``,
never nameko.
"""
