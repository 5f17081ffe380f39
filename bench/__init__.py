"""Benchmarks: our hub against a naive baseline, on loopback, in one run (``python -m bench``)."""
