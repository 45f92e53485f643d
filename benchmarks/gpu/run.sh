#!/usr/bin/env bash
# GPU benchmark: vLLM on this machine's GPU(s), the hybridllm gateway in front of it, and the same SLOs
# measured through the gateway and directly against vLLM, so the gateway's overhead shows side by side.
#
#   benchmarks/gpu/run.sh MODEL [VLLM_PORT]
#
# MODEL: a Hugging Face id or a local folder (what `vllm serve` takes). VLLM_PORT: default 8001.
# Environment (all optional):
#   GATEWAY_PORT=8000  TENSOR_PARALLEL_SIZE=1  ADAPTER_DIR=<peft folder, served as `tuned`>
#   RATE=4  DURATION=60 (seconds per open-loop run)  NUM_PROMPTS=200 (vllm bench serve)
#   SLO_TTFT_MS=500  SLO_TPOT_MS=50  OUT=benchmarks/results/gpu-<UTC timestamp>
# Needs: `vllm` (pip install vllm) and this project (`pip install .`) in the current environment, and a GPU.
# Writes under OUT: vllm.log, gateway.log, gateway-load/ and compare/ (hybridllm bench), vllm-bench/
# (vllm bench serve), and summary.json, whose content is also the last line printed.
set -euo pipefail

usage() {
    echo "usage: $0 MODEL [VLLM_PORT]" >&2
    exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
MODEL=$1
VLLM_PORT=${2:-8001}
GATEWAY_PORT=${GATEWAY_PORT:-8000}
TENSOR_PARALLEL_SIZE=${TENSOR_PARALLEL_SIZE:-1}
ADAPTER_DIR=${ADAPTER_DIR:-}
RATE=${RATE:-4}
DURATION=${DURATION:-60}
NUM_PROMPTS=${NUM_PROMPTS:-200}
SLO_TTFT_MS=${SLO_TTFT_MS:-500}
SLO_TPOT_MS=${SLO_TPOT_MS:-50}
OUT=${OUT:-benchmarks/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-900}

for tool in vllm hybridllm curl; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found on PATH" >&2; exit 2; }
done
mkdir -p "$OUT"

pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

# wait_for URL PID NAME: poll URL until it answers 200, fail early if the process PID has died.
wait_for() {
    local url=$1 pid=$2 name=$3 waited=0
    until curl -fsS -o /dev/null "$url"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "error: $name exited before it was ready; see $OUT/$name.log" >&2
            exit 1
        fi
        if ((waited >= READY_TIMEOUT_S)); then
            echo "error: $name not ready after ${READY_TIMEOUT_S}s; see $OUT/$name.log" >&2
            exit 1
        fi
        sleep 5
        waited=$((waited + 5))
    done
    echo "$name ready after ${waited}s"
}

# vLLM: the base model served as `base`; the adapter (if any) as `tuned`, as in deploy/gpu/README.md.
vllm_args=(serve "$MODEL" --served-model-name base --port "$VLLM_PORT"
    --tensor-parallel-size "$TENSOR_PARALLEL_SIZE")
gateway_env=()
if [[ -n $ADAPTER_DIR ]]; then
    vllm_args+=(--enable-lora --lora-modules "tuned=$ADAPTER_DIR" --max-lora-rank 16)
    pipelines=prompt,rag,tuned,hybrid
else
    # Without an adapter the gateway must not advertise `tuned`.
    gateway_env+=(HYBRID_GENERATOR__ADAPTERS='{}')
    pipelines=prompt,rag,hybrid
fi
VLLM_ALLOW_RUNTIME_LORA_UPDATING=1 vllm "${vllm_args[@]}" >"$OUT/vllm.log" 2>&1 &
pids+=("$!")
wait_for "http://127.0.0.1:$VLLM_PORT/health" "${pids[-1]}" vllm

env HF_HUB_OFFLINE=1 \
    HYBRID_GENERATOR__BASE_URL="http://127.0.0.1:$VLLM_PORT/v1" \
    ${gateway_env[@]+"${gateway_env[@]}"} \
    hybridllm serve --config deploy/gpu/settings.yaml --host 127.0.0.1 --port "$GATEWAY_PORT" \
    >"$OUT/gateway.log" 2>&1 &
pids+=("$!")
wait_for "http://127.0.0.1:$GATEWAY_PORT/readyz" "${pids[-1]}" gateway

gateway_url="http://127.0.0.1:$GATEWAY_PORT"

# Through the gateway: open-loop Poisson load per pipeline with the SLOs, then the architecture comparison.
hybridllm bench load --base-url "$gateway_url" --pipeline "$pipelines" --rate "$RATE" \
    --duration "$DURATION" --name gpu-gateway-load --out "$OUT/gateway-load" \
    --goodput "ttft:$SLO_TTFT_MS" "tpot:$SLO_TPOT_MS" | tee "$OUT/gateway-load.stdout"
hybridllm bench compare --base-url "$gateway_url" --pipelines "$pipelines" --name gpu-compare \
    --out "$OUT/compare" | tee "$OUT/compare.stdout"

# Directly against vLLM, same rate and SLOs: the floor the gateway adds routing and retrieval to.
vllm bench serve --backend openai-chat --base-url "http://127.0.0.1:$VLLM_PORT" \
    --endpoint /v1/chat/completions --model base --tokenizer "$MODEL" \
    --dataset-name random --random-input-len 256 --random-output-len 64 \
    --num-prompts "$NUM_PROMPTS" --request-rate "$RATE" \
    --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,95,99 \
    --goodput "ttft:$SLO_TTFT_MS" "tpot:$SLO_TPOT_MS" \
    --save-result --result-dir "$OUT/vllm-bench" --result-filename vllm-bench.json \
    | tee "$OUT/vllm-bench.stdout"

python - "$OUT" "$MODEL" "$TENSOR_PARALLEL_SIZE" "$RATE" "$SLO_TTFT_MS" "$SLO_TPOT_MS" <<'PY'
import json
import sys
from pathlib import Path

out, model, tp, rate, ttft, tpot = sys.argv[1:]


def last_json_line(path: Path) -> object:
    lines = [line for line in path.read_text().splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


vllm_result = Path(out, "vllm-bench", "vllm-bench.json")
summary = {
    "model": model,
    "tensor_parallel_size": int(tp),
    "rate_req_per_s": float(rate),
    "slo_ms": {"ttft": float(ttft), "tpot": float(tpot)},
    "gateway_load": last_json_line(Path(out, "gateway-load.stdout")),
    "compare": last_json_line(Path(out, "compare.stdout")),
    "vllm_bench": json.loads(vllm_result.read_text()) if vllm_result.exists() else None,
}
text = json.dumps(summary)
Path(out, "summary.json").write_text(text + "\n")
print(text)
PY
