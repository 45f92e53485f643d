"""End-to-end evaluation of a running service: routing, retrieval and answer quality, latency."""
