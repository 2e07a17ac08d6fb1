# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[train]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[all,test]'
	touch $@ $(VENV)/.demo-installed $(VENV)/.docs-installed

## make demo: synthetic herbarium sheets -> catalog -> Zarr store -> CNN -> report
demo: $(VENV)/.demo-installed
	$(BIN)/idigdask demo

## make test: install the test dependencies, start Ceph, run the whole suite
test: $(VENV)/.test-installed
	VENV=$(VENV) bash ci/test.sh

## make bench: idigdask side by side with img2dataset and the seed's approach
bench: $(VENV)/.test-installed
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/compare.py

$(VENV)/.docs-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[docs]'
	touch $@

## make docs: the site, its worked examples run, warnings as errors -> docs/_build/html
docs: $(VENV)/.docs-installed
	$(BIN)/python -m sphinx -W --keep-going -n -b html docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

clean:
	rm -rf $(VENV) docs/_build docs/api/generated docs/auto_examples docs/sg_execution_times.rst idigdask-demo .pytest_cache
