# The two commands of the README. Both create the virtual environment they need.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; a bare `torch` would pull a multi-GB CUDA build on a CPU machine.
# On a GPU machine: make demo TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH := torch==2.13.0
TORCH_INDEX ?=

.PHONY: demo test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[test,eval,quant,ray]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/redundancy demo --out out/demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# two pytest-xdist workers (CI has 2 cores); the groups of tests/conftest.py's xdist_group() (the demo
# and what reads it, the Ray tests, tests sharing a subprocess-built fixture) each stay on one worker
WORKERS ?= 2
XDIST = -n $(WORKERS) --dist loadgroup

# the whole suite, lint first
test: lint
	$(PY) -m pytest -q --durations=25 $(XDIST)

# everything but the tests marked slow (training, quantizing, lm-eval, subprocesses)
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" --durations=5 $(XDIST)

bench: $(VENV)/.installed
	$(PY) benchmarks/score_overhead.py

clean:
	rm -rf $(VENV) out
