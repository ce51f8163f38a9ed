"""Benchmarks: `python -m benchmarks` and the individual modules (see RESULTS.md)."""
