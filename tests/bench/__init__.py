"""Benchmarks (``make bench``): real processes on 127.0.0.1, ratios measured side by side, medians.

Not collected by pytest (no ``test_*`` modules) and no timed assertions anywhere: the numbers are
written to ``docs/benchmarks.md`` for people to read.
"""
