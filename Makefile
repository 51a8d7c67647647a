# `make demo` and `make test` bootstrap .venv from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv bench clean

venv: $(STAMP)

# torch is pinned and installed first: on a CPU machine that picks the local CPU build and keeps
# the `train` extra from pulling several GB of CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,test,cluster,plots]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m daemon.tools.demo

# ruff with the project's rules ([tool.ruff] in pyproject.toml), then the layer contracts
# ([tool.importlinter]), then the tests: a finding fails the run before any test starts.
test: $(STAMP) test-tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q

# promtool, systemd-analyze and a headless Chromium (the plate page's browser tests) are used by
# the integration tests; install them where missing.
.PHONY: test-tools
test-tools:
	@command -v promtool >/dev/null 2>&1 && command -v systemd-analyze >/dev/null 2>&1 && \
	  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      prometheus systemd chromium chromium-driver >/dev/null) \
	    || echo "note: could not install promtool/systemd-analyze/chromium; their tests will skip with that reason"; }

bench: $(STAMP)
	$(PY) -m bench.pipeline

clean:
	rm -rf $(VENV) demo-output
