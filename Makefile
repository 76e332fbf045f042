# Two entry points: `make demo` (the main job on the embedded default) and `make test` (the whole suite).
# Both set up a local virtual environment first; that step is skipped once done.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SETUP := $(VENV)/.setup-done
DEMO_OUT ?= runs/demo

.PHONY: setup demo test clean

setup: $(SETUP)

$(SETUP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(SETUP)

demo: $(SETUP)
	$(PY) -m duet_sdk.demo --out $(DEMO_OUT)

test: $(SETUP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
