# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.13.0: the machines here carry its CPU wheel locally (pip's find-links), so no CUDA download.
TORCH ?= torch==2.13.0

.PHONY: install run test test-fast test-pyannote bench fixtures clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	# resemblyzer asks for plain `webrtcvad` (needs pkg_resources); webrtcvad-wheels provides the module.
	$(BIN)/pip install -q --no-deps resemblyzer==0.1.4
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python -m shared.api

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python -m local_dev.bench

clean:
	rm -rf $(VENV) .pytest_cache
