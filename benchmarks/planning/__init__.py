"""`hybridllm plan`: capacity from the comparison's measured per-stage costs (benchmarks/results/compare)."""
