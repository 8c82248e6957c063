# zeroray: `make help` lists the targets.
PYTHON      ?= python3
VENV        ?= .venv
# The torch wheel to install first. The default is the CPU build; on GPU machines use e.g.
# TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
TORCH_SPEC  ?= torch==2.13.0
UV_SPEC     ?= uv==0.13.8
ARGS        ?=
PYTEST_ARGS ?=
# Each tier collects its own folder only: `-m ray` over both folders imported every unit test
# module too (the integration tier's collection: 17 s against 10.6 s).
UNIT_TESTS        ?= tests/unit
INTEGRATION_TESTS ?= tests/integration
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.installed
# DeepSpeed's JIT-built ops (trainer/build_ops.py) live with the environment that built them:
# in the shared ~/.cache/torch_extensions, two checkouts' environments rebuilt the same op
# (about a minute on 2 cores) each time the other had used it. Every target, and the Ray
# processes and tests it starts, inherits this.
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch_extensions

.DEFAULT_GOAL := help
.PHONY: help venv train finetune dpo eval pipeline diversity plan prepare ui test test-unit test-integration lint format clean serve serve-config query bench-serve \
	cluster-up cluster-down cluster-status submit job-status job-logs job-stop finish bench

help: ## list the targets, then the jobs of `make submit` (cluster/jobs.py)
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'
	@$(PYTHON) -m cluster.jobs

# pip installs torch (its CPU wheel lies on disk, found through pip's own configuration) and
# uv; uv installs the rest, several times faster than pip (README.md has the figures),
# keeping the torch already there. uv writes no bytecode unless asked: without it every process
# of the first run (the driver, each Ray worker and data task) compiled the same modules again,
# and a fresh clone's first step came 81 s after `make train` instead of 37 s (README.md).
# Then DeepSpeed's CPU communication op is built once, here, instead of by the first run's
# workers (a JIT build of a minute or more).
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_SPEC) $(UV_SPEC)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e ".[dev]"
	$(BIN)/python -m trainer.build_ops
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install the project with its pinned dependencies

train: $(STAMP) ## pretrain the embedded default (override with ARGS="model=... trainer.max_steps=...")
	$(BIN)/python -m cluster.train $(ARGS)

finetune: $(STAMP) ## fine-tune the newest pretraining export on the embedded QA set (ARGS="lora.enabled=true ...")
	$(BIN)/python -m cluster.finetune $(ARGS)

dpo: $(STAMP) ## preference-tune (DPO) the newest fine-tuning export on the embedded pairs (ARGS="lora.enabled=true ...")
	$(BIN)/python -m cluster.dpo $(ARGS)

eval: $(STAMP) ## evaluate the newest export (or ARGS="export=PATH"): perplexity, QA, BLEU -> eval.json
	$(BIN)/python -m cluster.eval $(ARGS)

pipeline: $(STAMP) ## prepare -> pretrain -> finetune -> dpo -> eval -> serve config (conf/pipeline.yaml); unchanged stages skip
	$(BIN)/python -m cluster.pipeline $(ARGS)

diversity: $(STAMP) ## sampling settings compared on the newest export (or ARGS="PATH"): diversity vs perplexity table + picture
	$(BIN)/python -m evaluation.diversity $(ARGS)

plan: $(STAMP) ## memory, time and cost of ARGS="..." and its alternatives (no Ray); --json, --finetune
	$(BIN)/python -m cluster.plan $(ARGS)

prepare: $(STAMP) ## only prepare (clean, tokenizer, tokenize, pack) the data of ARGS
	$(BIN)/python -m cluster.prepare $(ARGS)

UI_PORT ?= 5000
ui: $(STAMP) ## the MLflow UI over the runs' tracking store, on 127.0.0.1:UI_PORT (5000; ARGS="output_dir=...")
	$(BIN)/python -m cluster.ui --port $(UI_PORT) $(ARGS)

# The unit tier's ~690 tests are independent: pytest-xdist spreads them over one process per
# core (4 min -> 2.5 min on 2 cores). The integration tier shares one Ray cluster and the
# cores it schedules on, so it runs in one process, after.
TEST_WORKERS ?= auto
test: $(STAMP) ## run the whole test suite (unit on TEST_WORKERS processes, then integration on a local Ray cluster)
	$(BIN)/python -m pytest -m "not ray" -n $(TEST_WORKERS) $(PYTEST_ARGS) $(UNIT_TESTS)
	$(BIN)/python -m pytest -m ray $(PYTEST_ARGS) $(INTEGRATION_TESTS)

test-unit: $(STAMP) ## only the unit tier (no Ray), on TEST_WORKERS processes
	$(BIN)/python -m pytest -m "not ray" -n $(TEST_WORKERS) $(PYTEST_ARGS) $(UNIT_TESTS)

test-integration: $(STAMP) ## only the Ray integration tier
	$(BIN)/python -m pytest -m ray $(PYTEST_ARGS) $(INTEGRATION_TESTS)

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP) ## ruff autofix and format
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

clean: ## remove runs, caches and the virtualenv
	rm -rf runs cache $(VENV) .pytest_cache .ruff_cache

serve: $(STAMP) ## serve the newest export (or ARGS="checkpoint=PATH ...") on the local Ray cluster
	$(BIN)/python -m cluster.serve $(ARGS)

serve-config: $(STAMP) ## write serve_config.yaml for `serve deploy` / a KubeRay RayService
	$(BIN)/python -m cluster.serve --write-config serve_config.yaml $(ARGS)

query: $(STAMP) ## send PROMPT="..." to the running endpoint with the openai client
	$(BIN)/python -m cluster.ops.query "$(PROMPT)" $(QUERY_ARGS)

bench-serve: $(STAMP) ## serving at the port users call and at a replica vs transformers serve --continuous-batching (newest export)
	$(BIN)/python -m bench.serve_bench $(ARGS)

# ---- cluster operations (cluster/ops/local_head.py, cluster/ops/submit.py) ----
# JOB: a job of cluster/jobs.py (`make help` lists them); ID: a submission id from `submit`.
JOB            ?= train
ID             ?=
# Flags for cluster/ops/submit.py, e.g. SUBMIT_ARGS="--address http://HEAD:8265 --no-follow".
SUBMIT_ARGS    ?=
# Extra `ray start` flags for cluster-up, e.g. RAY_START_ARGS="--num-cpus=8".
RAY_START_ARGS ?=

cluster-up: $(STAMP) ## start a local Ray head (Jobs API and dashboard on 127.0.0.1:8265)
	$(BIN)/python -m cluster.ops.local_head up $(RAY_START_ARGS)

cluster-down: $(STAMP) ## stop the head that cluster-up started (and nothing else)
	$(BIN)/python -m cluster.ops.local_head down

cluster-status: $(STAMP) ## nodes, resources and recent jobs of the cluster (RAY_ADDRESS or local)
	$(BIN)/python -m cluster.ops.submit --cluster-status $(SUBMIT_ARGS)

submit: $(STAMP) ## run JOB (listed below) with ARGS on the Ray cluster; follow it, exit with its code
	$(BIN)/python -m cluster.ops.submit $(JOB) $(ARGS) $(SUBMIT_ARGS)

job-status: $(STAMP) ## status of the submitted job ID=...
	$(BIN)/python -m cluster.ops.submit --status "$(ID)" $(SUBMIT_ARGS)

job-logs: $(STAMP) ## logs of the submitted job ID=...
	$(BIN)/python -m cluster.ops.submit --logs "$(ID)" $(SUBMIT_ARGS)

job-stop: $(STAMP) ## stop the submitted job ID=...
	$(BIN)/python -m cluster.ops.submit --stop "$(ID)" $(SUBMIT_ARGS)

finish: $(STAMP) ## end the running training RUN=<run directory> at its next log step, with its export
	$(BIN)/python -m cluster.ops.finish "$(RUN)"

bench: $(STAMP) ## every benchmark side by side with its baseline; updates BENCHMARKS.md (ARGS=--quick; --sweep; --data-1gib)
	$(BIN)/python -m bench.run_all $(ARGS)
