# Two entry points for a fresh machine: `make demo` trains the tutorial's MNIST LSTM on the
# sample shipped in the package, `make test` runs the test suite. Both build .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch 2.13.0; a looser pin would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	# The C++ kernels, compiled now (announced, about 40 s) rather than inside the first epoch.
	# Where they cannot run (no AVX-512, no compiler) it says why; training then uses the fused path.
	$(VENV)/bin/rnnlab build-kernels || true
	touch $@

.PHONY: demo test lint
# No --out: each demo run gets its own runs/mnist-sample-<time>, so it can be run again.
demo: $(VENV)/.installed
	$(VENV)/bin/rnnlab train mnist-sample

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
