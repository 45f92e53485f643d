"""The shared harness every bench uses: load generator, client, workload, stats, report, /metrics, fixture."""
