"""Benchmarks: load generator, architecture comparison, gateway overhead, router / retrieval benches."""
