"""Scanning and quarantine (issue 12, CONTRACT section 9): ClamAV over INSTREAM and the
service's own rules, a claimed job like processing, fail closed, admin release.

Nothing here yet. It may import ``core``, ``catalog``'s public face and ``storage``, never
nameko.
"""
