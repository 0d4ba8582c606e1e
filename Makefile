# Two commands do all set-up on a fresh machine (Python 3.11+):
#   make serve   install into .venv, then serve every built-in scorer on 127.0.0.1:50051
#   make test    install into .venv, then lint, type-check and run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install serve test lint typecheck protos bench

$(STAMP): pyproject.toml examples/plugin_example/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,train,ray]' -e examples/plugin_example
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/arbiter serve

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: lint typecheck
	$(VENV)/bin/pytest

protos: $(STAMP)
	$(PY) protos/generate.py

bench: $(STAMP)
	$(PY) benchmarks/throughput.py
