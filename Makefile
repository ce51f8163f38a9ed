# Every target bootstraps its own virtualenv: `make demo` and `make test` work on a fresh clone.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint bench eval clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[all,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/agent-sessions demo

lint: $(STAMP)
	$(BIN)/ruff check agent_sessions tests examples benchmarks
	$(BIN)/ruff format --check agent_sessions tests examples benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.export_rss --record

eval: $(STAMP)
	$(BIN)/python -m benchmarks.recommendations
	$(BIN)/python -m benchmarks.recall_eval

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache agent_sessions.db*
