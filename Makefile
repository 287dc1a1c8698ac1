# The README's two commands: `make demo` (the main job) and `make test`.
# Both build the virtualenv first, pinned by constraints.txt, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out

.PHONY: venv test test-fast demo lint clean

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test,torch,tpu,notebooks,lm,translation]'
	touch $(STAMP)

venv: $(STAMP)

# JAX_PLATFORMS=cpu: the tpu extra's libtpu would otherwise probe for a TPU in every test
# process (warnings, a lock file); the AOT test compiles for TPU topologies regardless.
test: $(STAMP)
	JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q -n 2 --durations=15 tests

# The fast lane for local work: everything but the `slow` and `integration` tests (pyproject.toml).
test-fast: $(STAMP)
	JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q -n 2 --durations=10 -m "not slow and not integration" tests

demo: $(STAMP)
	$(BIN)/python experiments/demo.py --workdir $(DEMO_DIR)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(DEMO_DIR)
