#!/bin/sh
# Container entrypoint: `hybridllm ARGS...` with a clean Prometheus multiprocess directory.
#
# prometheus_client's multiprocess mode keeps one file per worker process in PROMETHEUS_MULTIPROC_DIR and
# sums them on scrape. Files left by a previous run (a container restart keeps its volumes) would be
# counted again, so the directory is emptied before the server starts.
set -eu

if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
    find "$PROMETHEUS_MULTIPROC_DIR" -mindepth 1 -delete
fi

exec hybridllm "$@"
