"""Reliability tests (issue 15): a fuzzer of a real node over real sockets, and coturn's
advisories as regression tests. The long runs (soak, flood) are in benchmarks/."""
