# The two commands a newcomer runs (README): `make demo` and `make test`.
# Each creates .venv on first use and installs the locked versions (requirements/*.txt).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.8
UV     := $(BIN)/uv pip install --quiet --python $(BIN)/python

.PHONY: demo test lint typecheck unit bench lock clean

# eventml has one compiled module (src/eventml/_kernels.c, built by setup.py on install)
BUILD_DEPS := setup.py src/eventml/_kernels.c
CHECK_CC = @command -v $${CC:-cc} >/dev/null || { echo "expected a C compiler to build src/eventml/_kernels.c, got no '$${CC:-cc}' on PATH (Debian: apt-get install gcc python3-dev)"; exit 1; }

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.runtime: $(BIN)/uv requirements/runtime.txt pyproject.toml $(BUILD_DEPS)
	$(CHECK_CC)
	$(UV) -r requirements/runtime.txt
	$(UV) --no-deps -e .
	touch $@

$(VENV)/.test: $(BIN)/uv requirements/test.txt pyproject.toml $(BUILD_DEPS)
	$(CHECK_CC)
	$(UV) -r requirements/test.txt
	$(UV) --no-deps -e .
	touch $@ $(VENV)/.runtime $(VENV)/.demo

# The demo trains models, so it installs the sklearn extra (locked in requirements/demo.txt).
$(VENV)/.demo: $(BIN)/uv requirements/demo.txt pyproject.toml $(BUILD_DEPS)
	$(CHECK_CC)
	$(UV) -r requirements/demo.txt
	$(UV) --no-deps -e .
	touch $@

demo: $(VENV)/.demo
	$(BIN)/eventml demo --data ./eventml-demo

lint: $(VENV)/.test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.test
	$(BIN)/mypy

unit: $(VENV)/.test
	$(BIN)/pytest --doctest-modules src tests

test: lint typecheck unit

# Benchmarks print figures next to their anchors (README table); run from the repository
# root as modules, so that bench/http.py never shadows the standard library's http.
bench: $(VENV)/.test
	$(BIN)/python -m bench.log
	$(BIN)/python -m bench.onnx_plugin
	$(BIN)/python -m bench.pmml
	$(BIN)/python -m bench.stream
	$(BIN)/python -m bench.rendezvous
	$(BIN)/python -m bench.replay
	$(BIN)/python -m bench.view
	$(BIN)/python -m bench.labels
	$(BIN)/python -m bench.kafka
	$(BIN)/python -m bench.http

# Re-resolve the lock files after changing dependencies in pyproject.toml.
lock: $(BIN)/uv
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 pyproject.toml -o requirements/runtime.txt
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 pyproject.toml --extra sklearn -o requirements/demo.txt
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 pyproject.toml --extra test -o requirements/test.txt

clean:
	rm -rf $(VENV) eventml-demo .mypy_cache .pytest_cache .ruff_cache
