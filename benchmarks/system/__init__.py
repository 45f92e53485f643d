"""Benches of the whole service: compare, gateway overhead, soak, sweep, update cost, grounding."""
