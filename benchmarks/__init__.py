"""Benchmarks: the shared harness, one component at a time (components/), the whole service (system/)."""
