# Two entry points: `make demo` (the main job on the embedded default) and `make test` (the whole suite).
# Both set up a local virtual environment (torch, tritonserver via nvidia-pytriton, ...) and Debian's
# redis-server first; those steps are skipped once done.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SETUP := $(VENV)/.setup-done
DEMO_OUT ?= runs/demo

.PHONY: setup redis-server demo test bench clean

setup: $(SETUP) redis-server

# A real redis-server for the demo and the tests (Debian's package; skipped when one is on PATH).
redis-server:
	@command -v redis-server >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

$(SETUP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[all,dev]"
	touch $(SETUP)

demo: $(SETUP) redis-server
	$(PY) -m duet_sdk.demo --out $(DEMO_OUT)

test: $(SETUP) redis-server
	$(PY) -m ruff check .
	$(PY) -m pytest -q

# Performance against the machine's limit (benchmarks/README.md); QUICK=1 for a few-minute run.
bench: $(SETUP)
	$(PY) -m benchmarks.bench --out runs/bench $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) runs .pytest_cache
