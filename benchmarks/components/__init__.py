"""Benches of one component each: router, retrieval, embedder, generator, privacy gate."""
