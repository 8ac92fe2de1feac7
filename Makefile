# Two entry points (see README.md): `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench venv clean

$(STAMP): requirements.txt requirements-dev.txt algorithm/requirements.txt evaluation/requirements.txt app/requirements.txt \
		dataset/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build, and this pair
	# is the one whose torchvision imports (nnunetv2, a test dependency, needs it).
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -r requirements-dev.txt
	# The dataset tool (DICOM conversion): its own list, kept out of the containers' images.
	$(PY) -m pip install -q -r dataset/requirements.txt
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m app dry-run

test: $(STAMP)
	$(PY) -m pytest -q test

bench: $(STAMP)
	$(PY) benchmarks/bench_evaluation.py
	$(PY) benchmarks/bench_baseline.py
	$(PY) benchmarks/bench_app.py
	$(PY) benchmarks/bench_inference.py --quick

clean:
	rm -rf $(VENV)
