# erp-mes-sync: `make demo` runs the embedded demo end to end, `make test` runs the checks and the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ORDERS ?= 300

DEMO   := $(CURDIR)/.demo

# The demo's Airflow: its own home and SQLite metadata under .demo/airflow, the DAGs of dags/,
# no example DAGs, and the `etl` package importable by every Airflow process.
AIRFLOW_ENV := PATH="$(CURDIR)/$(BIN):$$PATH" PYTHONPATH="$(CURDIR)" \
	AIRFLOW_HOME="$(DEMO)/airflow" \
	AIRFLOW__CORE__DAGS_FOLDER="$(CURDIR)/dags" \
	AIRFLOW__CORE__LOAD_EXAMPLES=False
# The demo databases as Airflow connections. SQLite files: there is no password to keep out.
DEMO_CONNECTIONS := AIRFLOW_CONN_ERP_DB="sqlite:///$(DEMO)/erp.db" \
	AIRFLOW_CONN_MES_DB="sqlite:///$(DEMO)/mes.db" \
	AIRFLOW_CONN_WAREHOUSE_DB="sqlite:///$(DEMO)/warehouse.db"

.PHONY: venv demo demo-data demo-reset airflow lint test check bench bench-latency clean doc-images

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	touch $(STAMP)

# Builds the demo databases once (SQLite under .demo/), then syncs every flow through Airflow
# (each flow's DAG once, with dag.test()), brings the warehouse's material history up to date,
# writes the dashboard (.demo/dashboard.html) and the data-quality report with its Great
# Expectations Data Docs (.demo/data_quality_report.html). Run it again: nothing changes.
# `make demo-reset` rebuilds the demo from scratch.
demo: demo-data
	$(BIN)/python -m etl warehouse build
	$(AIRFLOW_ENV) $(BIN)/python -m etl demo airflow
	$(BIN)/python -m etl dashboard
	$(BIN)/python -m etl report --data-docs

demo-data: venv
	test -f .demo/connections.json || $(BIN)/python -m etl demo init --orders $(ORDERS)

demo-reset: venv
	rm -rf .demo
	$(MAKE) demo

# Airflow 3 on the demo at http://localhost:8080 (user admin, password in
# .demo/airflow/simple_auth_manager_passwords.json.generated). Ctrl-C stops it.
airflow: demo-data
	$(AIRFLOW_ENV) airflow db migrate
	$(AIRFLOW_ENV) $(BIN)/python -m etl pools > $(DEMO)/airflow/pools.json
	$(AIRFLOW_ENV) airflow pools import $(DEMO)/airflow/pools.json
	$(AIRFLOW_ENV) $(DEMO_CONNECTIONS) AIRFLOW__API__HOST=127.0.0.1 airflow standalone

# The pipeline against PostgreSQL's own COPY on 1M rows (BENCH_ARGS="--rows 5000000" for more),
# then numbered documents with lines and delta postings at 20k and 200k documents, then a 1M-row
# CSV file flow against COPY FROM of the same file, a 100k-row workbook, and 100k records paged
# from a local web API.
bench: venv
	$(BIN)/python bench/benchmark.py $(BENCH_ARGS)
	$(BIN)/python bench/documents.py
	$(BIN)/python bench/files.py
	$(BIN)/python bench/api.py

# Shop-floor feedback latency: 200 MES commits at random 0.1-3 s intervals, MES commit -> ERP row,
# p50/p95/max for `python -m etl watch` woken by NOTIFY and by MQTT, and for Airflow's asset watcher
# (about 18 minutes; BENCH_ARGS="--modes notify" for one).
bench-latency: venv
	$(BIN)/python bench/latency.py $(BENCH_ARGS)

check: venv
	$(BIN)/python -m etl check

# ruff (lint and import order) and mypy, both configured in pyproject.toml.
lint: venv
	$(BIN)/ruff check etl dags tests bench
	$(BIN)/mypy etl

test: venv lint
	$(BIN)/python -m pytest

# Rewrites the README's screenshots (docs/images/) from a fresh demo, in headless Chromium.
doc-images: venv
	UPDATE_DOC_IMAGES=1 $(BIN)/python -m pytest tests/integration/test_demo_report.py -k screenshots -q

clean:
	rm -rf .demo .pytest_cache .mypy_cache .ruff_cache
