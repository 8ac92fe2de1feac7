# Two entry points (see README.md): `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pyproject.toml reads its dependency lists from these files (one home each; the images install them too).
REQUIREMENTS := pyproject.toml requirements-dev.txt algorithm/requirements.txt evaluation/requirements.txt \
	app/requirements.txt evaluation/report-requirements.txt dataset/requirements.txt
# The stamp is named after the package's and the requirement files' content, not compared by date: a fresh clone
# or checkout (every file newer than the stamp) reuses the venv, and only an edited requirement reinstalls.
REQUIREMENTS_SHA256 := $(shell $(PYTHON) -c "import hashlib, sys; print(hashlib.sha256(b''.join(open(f, 'rb').read() for f in sys.argv[1:])).hexdigest()[:16])" $(REQUIREMENTS))
STAMP := $(VENV)/.installed-$(REQUIREMENTS_SHA256)

.PHONY: demo test test-fast lint bench venv clean

$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build, and this pair
	# is the one whose torchvision imports (nnunetv2, a test dependency, needs it).
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	# The kit itself, editable (the console scripts and `python -m` work from any folder), with every extra.
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m app dry-run

test: $(STAMP)
	$(PY) -m pytest -q test

# Lint and import order, as CI checks them (.ci/run): ruff, configured in pyproject.toml.
lint: $(STAMP)
	$(PY) -m ruff check .

# Everything but the slow tests (nnU-Net parity, container images, end-to-end dry runs and campaigns, Dask
# clusters, the browser: the `slow` marker in pyproject.toml): the edit-test loop, a few minutes. CI runs `make test`.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" test

bench: $(STAMP)
	$(PY) benchmarks/bench_evaluation.py
	$(PY) benchmarks/bench_score_startup.py
	$(PY) benchmarks/bench_baseline.py
	$(PY) benchmarks/bench_app.py
	$(PY) benchmarks/bench_report.py
	$(PY) benchmarks/bench_inference.py --quick

clean:
	rm -rf $(VENV)

# --- Container images (README.md, "Container images"): docker when its daemon answers, else podman. ---------
# CONTAINER_ENGINE=docker|podman forces one; CPU=1 builds the CPU variant on the local CPU torch base (tags :cpu);
# BASES=local|public|auto picks the bases (auto: the local ones once `make base-images` made them).
CONTAINER_ENGINE ?=
BASES ?= auto
CPU ?=
IMAGE ?= petct-kit/algorithm:$(if $(CPU),cpu,latest)
TARBALL ?= build/algorithm.tar.gz
IMAGES := $(PY) -m images $(if $(CONTAINER_ENGINE),--engine $(CONTAINER_ENGINE))

.PHONY: base-images images algorithm-tarball image-test

base-images: $(STAMP)
	nice -n 10 $(IMAGES) base-images

images: $(STAMP)
	nice -n 10 $(IMAGES) build --bases $(BASES) $(if $(CPU),--cpu)

algorithm-tarball: $(STAMP)
	$(IMAGES) tarball --image $(IMAGE) --output $(TARBALL)

# Builds what is missing (local Debian bases, CPU torch; cached between runs), then runs each image as the
# platform does. Not part of `make test`: it needs podman or Docker and takes minutes.
image-test: $(STAMP)
	PETCT_IMAGE_TEST=1 $(PY) -m pytest -q test/test_images.py
