# Two commands for a newcomer: `make run` and `make test`. Both build .venv from nothing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: run test bench system-deps clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

# Debian packages the integration tests drive for real (promtool, rsyslog, SEC); installed when missing.
system-deps:
	@bash deploy/install-test-deps.sh

# The daemon on its embedded defaults: tails sample_logs/, listens for syslog on 127.0.0.1:5514, serves metrics on
# 127.0.0.1:9108, prints each alert (a readable line on a terminal, JSON when piped) and says what it is doing
# (inputs, caught up, alerts so far). A demo: its state in ./state is reset on every `make run`.
run: $(STAMP)
	rm -rf state
	$(BIN)/siem run --print-alerts --progress

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -n 2 -q tests/

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
