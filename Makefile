# daflow: two-command set-up (make demo, make test).  Everything runs from .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
export DAFLOW_SAMPLE_DATA ?= $(abspath ../shared/data)

.PHONY: install test test-slow lint demo clean

install: $(BIN)/daflow

$(BIN)/daflow: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

demo: install
	$(BIN)/python recipes/demo.py --out demo-out

lint: install
	$(BIN)/ruff check cli daflow tests benchmarks recipes
	$(BIN)/mypy

clean:
	rm -rf $(VENV) out demo-out
