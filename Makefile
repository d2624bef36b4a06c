# Two commands on a fresh machine with Python 3.11 (no conda needed):
#   make demo   set up .venv, train on the built-in demo data, tell where to look
#   make test   set up .venv (+ Chromium and PostgreSQL from Debian), run every test
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# `mlflow run --env-manager local` calls `python` from PATH: make it the venv's.
RUN := PATH="$(BIN):$$PATH"

.PHONY: setup demo demo-sweep dashboard test test-fast lint bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# setuptools warns on every editable install that a folder named like a package may shadow it: ours are the packages.
	PYTHONWARNINGS='ignore:Editable installation' $(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(RUN) mlflow run . --env-manager local --experiment-name demo \
	  -P stage=scratch -P weights=none -P image_size=64 -P alpha=0.35 \
	  -P lr=3e-3 -P epochs=8 -P batch_size=16
	@echo "Compare runs: make dashboard   (or: $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db)"

# A whole small study on the demo data that ends with verdicts (plans/demo.yaml: 2 seeds a rate, racing to 4
# until decided; measured: 17 runs, 35 s to 2.5 min each on 2 cores shared at load average 7-17).
demo-sweep: $(STAMP)
	$(RUN) mlflow run . --env-manager local -e sweep --experiment-name demo -P plan=demo
	@echo "Compare runs: make dashboard, then open http://localhost:8501/?exp=demo&join=true"

dashboard: $(STAMP)
	$(RUN) streamlit run app/serve.py

# -m "": every test, slow, browser and PostgreSQL ones included (a bare pytest leaves them out).
# Both run two workers, a file each at a time, longest files first (pyproject.toml's addopts).
test: $(STAMP)
	bash .ci/system-deps.sh
	$(RUN) pytest -m "" --durations=15

test-fast: $(STAMP)
	$(RUN) pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(RUN) python bench/bench_tracking_overhead.py
	$(RUN) python bench/bench_input_pipeline.py
