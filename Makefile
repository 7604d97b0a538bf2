# erp-mes-sync: `make demo` runs the embedded demo end to end, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ORDERS ?= 1000

.PHONY: venv demo demo-reset test check clean

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	touch $(STAMP)

# Builds the demo databases once (SQLite under .demo/), then syncs every flow.
# Run it again: nothing changes. `make demo-reset` rebuilds the demo from scratch.
demo: venv
	test -f .demo/connections.json || $(BIN)/python -m etl demo init --orders $(ORDERS)
	$(BIN)/python -m etl run all

demo-reset: venv
	rm -rf .demo
	$(MAKE) demo

check: venv
	$(BIN)/python -m etl check

test: venv
	$(BIN)/python -m pytest

clean:
	rm -rf .demo .pytest_cache
