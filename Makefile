# The two quickstart commands: `make demo` (the main job on the built-in samples) and
# `make test`. Each creates the virtual environment it needs (.venv) on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv demo test lint bench clean

$(VENV)/.installed: requirements.txt setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# Main job: records -> training -> colorize -> evaluate on the built-in samples (koala/demo.py).
# Offline by design: the embedder is MobileNet with random weights, chosen explicitly and
# printed; see the README for ImageNet weights.
demo: venv
	$(PY) -m koala.demo

test: venv
	$(PY) -m pytest -q

lint: venv
	$(PY) -m pip install --quiet ruff
	$(VENV)/bin/ruff check koala data_prep tests benchmarks

bench: venv
	$(PY) benchmarks/records.py
	$(PY) benchmarks/pipeline.py

clean:
	rm -rf $(VENV) data/records runs
