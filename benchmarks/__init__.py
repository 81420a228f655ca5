"""Benchmarks for capillary_async, run with ``python -m benchmarks`` or ``nox -s bench``."""
