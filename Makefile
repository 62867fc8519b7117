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

.PHONY: install test exe compile

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# pip byte-compiles a wheel's modules when it installs them, but not those of an
# editable install; where PYTHONDONTWRITEBYTECODE is set (as on our CI machines)
# every kvchat process would then compile the source it imports again (35-60 ms
# of `kvchat --help`; docs/performance.md). Only changed files are compiled again.
compile: $(STAMP)
	$(VENV)/bin/python -m compileall -q src migrations

install: compile
	$(VENV)/bin/kvchat --help

test: compile
	$(VENV)/bin/python -m pytest
	$(VENV)/bin/python scripts/with_postgres.py $(VENV)/bin/python -m pytest --engine postgresql

exe: $(STAMP)
	$(VENV)/bin/python -m pip install --quiet -e '.[build]'
	$(VENV)/bin/python scripts/build_executable.py
