# Two commands set kvchat up on a fresh machine (Python 3.11+ required):
#   make install   create .venv, install kvchat into it, and run it
#   make test      the same install, then the whole test suite twice: with the
#                  store on SQLite, then on PostgreSQL (a fresh database on the
#                  local server, started if it is down; see scripts/with_postgres.py)
#   make exe       the same install, then dist/kvchat: kvchat as one executable
#                  file for this platform (PyInstaller; see scripts/build_executable.py)
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: install test exe

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)
	$(VENV)/bin/kvchat --help

test: $(STAMP)
	$(VENV)/bin/python -m pytest
	$(VENV)/bin/python scripts/with_postgres.py $(VENV)/bin/python -m pytest --engine postgresql

exe: $(STAMP)
	$(VENV)/bin/python -m pip install --quiet -e '.[build]'
	$(VENV)/bin/python scripts/build_executable.py
