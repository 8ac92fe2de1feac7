# Two entry points (see README.md): `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
REQUIREMENTS := requirements.txt requirements-dev.txt algorithm/requirements.txt evaluation/requirements.txt app/requirements.txt \
	evaluation/report-requirements.txt
# The stamp is named after the requirement files' content, not compared by date: a fresh clone or checkout
# (every file newer than the stamp) reuses the venv, and only an edited requirement reinstalls.
REQUIREMENTS_SHA256 := $(shell $(PYTHON) -c "import hashlib, sys; print(hashlib.sha256(b''.join(open(f, 'rb').read() for f in sys.argv[1:])).hexdigest()[:16])" $(REQUIREMENTS))
STAMP := $(VENV)/.installed-$(REQUIREMENTS_SHA256)

.PHONY: demo test bench venv clean

$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build, and this pair
	# is the one whose torchvision imports (nnunetv2, a test dependency, needs it).
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -r requirements-dev.txt
	rm -f $(VENV)/.installed $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m app dry-run

test: $(STAMP)
	$(PY) -m pytest -q test

bench: $(STAMP)
	$(PY) benchmarks/bench_evaluation.py
	$(PY) benchmarks/bench_score_startup.py
	$(PY) benchmarks/bench_baseline.py
	$(PY) benchmarks/bench_app.py
	$(PY) benchmarks/bench_report.py
	$(PY) benchmarks/bench_inference.py --quick

clean:
	rm -rf $(VENV)
