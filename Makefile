# Tidings — every command a developer or CI runs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
KAFKA := $(PY) deploy/local/kafka_local.py

.DEFAULT_GOAL := help
.PHONY: help install kafka-fetch kafka kafka-stop topics run test test-unit test-integration lint typecheck check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is needed"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP) ## create .venv and install Tidings with its pinned dependencies

kafka-fetch: $(STAMP) ## fetch the Kafka jars from Maven Central into .cache (once)
	$(KAFKA) fetch

kafka: kafka-fetch ## start a local Kafka broker in the background; prints the bootstrap
	$(KAFKA) start

kafka-stop: $(STAMP) ## stop the broker `make kafka` started
	$(KAFKA) stop

topics: $(STAMP) ## create every topic on TIDINGS_KAFKA_BOOTSTRAP
	$(VENV)/bin/tidings topics create

run: kafka-fetch ## the whole system locally: broker, worker, webhook receiver, samples
	$(PY) deploy/local/run.py

test: kafka-fetch ## the whole test suite (starts its own broker unless TIDINGS_KAFKA_BOOTSTRAP is set)
	$(PY) -m pytest -q

test-unit: $(STAMP) ## unit tests only (no broker)
	$(PY) -m pytest -q tests/unit

test-integration: kafka-fetch ## integration and end-to-end tests (real broker)
	$(PY) -m pytest -q tests/integration tests/e2e

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check streams agents connectors deploy tests

typecheck: $(STAMP) ## mypy --strict on the packages
	$(VENV)/bin/mypy

check: lint typecheck test ## everything CI checks

clean: ## remove caches (keeps the Kafka jars)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .cache/worker .cache/run-kafka

.PHONY: bench bench-smoke bench-channels
bench: kafka-fetch ## run the benchmarks; writes tests/bench/results/
	@test -x $(VENV)/bin/py-spy || $(PY) -m pip install --quiet py-spy==0.4.3  # profiler only; not a dependency
	$(PY) tests/bench/run.py

bench-smoke: kafka-fetch ## a few-second run of the same harness
	$(PY) tests/bench/run.py --label smoke --events 300 --delivery-events 200 \
		--ceiling-records 20000 --latency-seconds 3 --rate 50 --fallback-seconds 0 \
		--budget 30 --profile none

bench-channels: $(STAMP) ## deliveries/s of each channel's connector against its emulator
	$(PY) tests/bench/channels.py

.PHONY: bench-enrich bench-languages
bench-enrich: $(STAMP) ## enrichments/s with and without NER, micro-batcher, models' memory, pipeline
	$(PY) tests/bench/enrich.py

bench-languages: $(STAMP) ## the language detectors compared on tests/data/languages.tsv
	@$(PY) -m pip install --quiet lingua-language-detector==2.1.1 pycld2==0.42 langid==1.1.6  # compared only; not dependencies
	$(PY) tests/bench/languages.py
.PHONY: dashboards
dashboards: $(STAMP) ## regenerate the Grafana dashboard JSON (deploy/grafana/generate.py)
	$(PY) deploy/grafana/generate.py
.PHONY: kubeconform deploy-check
KUBECONFORM_VERSION := v0.7.0
kubeconform: ## build kubeconform into .cache/bin with `go install` (needs Go)
	@test -x .cache/bin/kubeconform || GOBIN=$(CURDIR)/.cache/bin go install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)

deploy-check: $(STAMP) kubeconform ## validate deploy/: Kubernetes manifests, Dockerfile, compose.yaml (offline)
	$(PY) deploy/validate.py
.PHONY: bench-analytics
bench-analytics: $(STAMP) ## the analytics stage's statuses/s and the runaway guard's cost per request
	$(PY) tests/bench/analytics.py
.PHONY: bench-render
bench-render: $(STAMP) ## template renders/s per worker process, and what the sandbox refuses
	$(PY) tests/bench/render.py --json tests/bench/results/render.json
