"""Benchmarks of the media service; run each with ``python -m bench.<name>`` (see README.md)."""
