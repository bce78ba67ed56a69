# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv by itself (python3-venv first) and
# makes sure the Debian packages they start privately are installed (devtools/ensure-packages.sh: installs as root,
# else says what to run).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck docs check bench packages clean

$(STAMP): pyproject.toml constraints.txt
	@PYTHON=$(PYTHON) sh devtools/ensure-packages.sh venv
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -c constraints.txt
	touch $(STAMP)

packages:
	@PYTHON=$(PYTHON) sh devtools/ensure-packages.sh

demo: $(STAMP) packages
	PATH="$$PATH:/usr/sbin" $(PY) -m devtools.demo

test: $(STAMP) packages
	PATH="$$PATH:/usr/sbin" $(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# The documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link, anchor or a page left out of the
# nav fails. Not --quiet: it hides the warnings --strict counts. NO_MKDOCS_2_WARNING: no banner in every build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# What CI runs: lint (with the import contracts), the type check, the docs, then the tests.
check: lint typecheck docs test

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
