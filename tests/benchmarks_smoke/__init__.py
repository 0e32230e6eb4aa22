"""Smoke tests of the benchmarks' helpers: that they build and work, never how fast."""
