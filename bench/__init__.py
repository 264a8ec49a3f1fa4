"""Benchmarks: each measures a baseline in the same run and reports a ratio (docs/benchmarks.md)."""
