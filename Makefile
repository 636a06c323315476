# Perturb's entry points. `make book` builds the website, `make test` runs everything CI runs.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: venv book test check run-stale clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

book: venv
	$(PY) -m perturb reproductions
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo "The book is in _build/html: open _build/html/index.html in a browser."

test: venv
	bash scripts/test.sh

check: venv
	$(PY) -m perturb check

run-stale: venv
	$(PY) -m perturb run --stale

clean:
	rm -rf _build _runs
