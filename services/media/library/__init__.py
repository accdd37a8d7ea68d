"""Organising a library (issue 10, CONTRACT section 7): folders per owner with live counts, many
links per media, tags, bulk changes and cascades from other services' events.

Nothing here yet. It will hold its domain modules in the same roles as ``catalog``; it may
import ``core``, ``catalog``'s public face and ``storage``, never nameko.
"""
