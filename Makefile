# Every target installs what it needs first; `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
AZURITE := node_modules/.bin/azurite
export DAGSTER_HOME := $(CURDIR)

.PHONY: install demo test test-slow bench dev mlflow-ui validate clean

install: $(STAMP) $(AZURITE)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Azurite, the Azure Storage emulator (Blob and Queue), for the azurite profile and the tests.
$(AZURITE): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $(AZURITE)

## Simulate 14 days for 50 meters and push them through the whole graph on the local profile.
demo: $(STAMP)
	$(BIN)/mlops demo --reset --days 14 --meters 50 --bad-files 2

## Run the test suite.
test: $(STAMP) $(AZURITE)
	$(BIN)/python -m pytest

## The slow tests: message storms and fault injection on Azurite (minutes each).
test-slow: $(STAMP) $(AZURITE)
	$(BIN)/python -m pytest -m slow

## The benchmarks, one after the other, and their result table in benchmarks/README.md
## (about an hour and a half; BENCH="blob_io checkpoint_overhead" runs only those).
bench: $(STAMP) $(AZURITE)
	$(BIN)/python benchmarks/run_all.py $(BENCH)

## The Dagster UI and daemon (sensors, automation) on http://127.0.0.1:3000.
## PROFILE=azurite also starts Azurite, an MLflow server and the queue listener (MLOPS_ARRIVALS picks).
PROFILE ?= local
dev: $(STAMP) $(AZURITE)
	$(BIN)/mlops dev --profile $(PROFILE)

## The MLflow UI on the local profile's tracking store, http://127.0.0.1:5000.
mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.mlops/mlflow.db --port 5000

## Check that the definitions load.
validate: $(STAMP)
	$(BIN)/dagster definitions validate -w workspace.yaml

clean:
	rm -rf .mlops .dagster
