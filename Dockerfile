# One Dockerfile, three images (build with --target; `make images` builds them all, see README.md):
#   algorithm   - the inference container grand-challenge runs per study (PyTorch + CUDA runtime)
#   evaluation  - the scoring container (slim Python, no torch)
#   app         - the HTTP service (python -m app serve), which runs the algorithm's engine itself
# Every image: linux/amd64, a non-root user that exists in /etc/passwd, code in /opt/app owned by root and
# read-only to that user, exec-form entry points that work from any working directory, unbuffered output.
# The bases are build args: `make base-images` makes local stand-ins from Debian packages (a CPU torch base
# gives the CPU variant of the algorithm image). With podman, build with --format docker: the OCI format has
# no HEALTHCHECK.

ARG PYTORCH_IMAGE=pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Installed packages' own test suites (numpy's and scipy's: about 80 MB) are never run in an image: each
# install step deletes them in the same layer, so they take no space.
ARG PRUNE_TESTS="import pathlib, shutil, site; [shutil.rmtree(t, ignore_errors=True) for d in site.getsitepackages() for t in list(pathlib.Path(d).rglob('tests')) if t.is_dir()]"

# ---------------------------------------------------------------------------------------------------
FROM --platform=linux/amd64 ${PYTORCH_IMAGE} AS algorithm
ARG PRUNE_TESTS
# The participant's image runs nnU-Net: a missing model fails the job instead of silently running the
# weight-free baseline. `--build-arg ALGORITHM_ENGINE=auto` restores the fallback.
ARG ALGORITHM_ENGINE=nnunet
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/opt/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PETCT_KIT_ENGINE=${ALGORITHM_ENGINE}
# The platform refuses root and hangs on a USER missing from /etc/passwd: create it, with a home.
RUN groupadd --system user \
    && useradd --system --gid user --create-home --home-dir /home/user --shell /usr/sbin/nologin user \
    && mkdir -p /opt/app /opt/ml/model
WORKDIR /opt/app
# torch comes with the base image; the requirement's range keeps pip from replacing it.
COPY algorithm/requirements.txt /opt/app/algorithm/requirements.txt
RUN python -m pip install --no-cache-dir -r /opt/app/algorithm/requirements.txt \
    && python -c "$PRUNE_TESTS"
COPY pyproject.toml LICENSE /opt/app/
COPY petct/ /opt/app/petct/
COPY algorithm/ /opt/app/algorithm/
# The kit as an editable install, as `make` installs it locally: its version for the logs, its console scripts.
# Its dependencies came from the requirements file above (--no-deps).
RUN python -m pip install --no-cache-dir --no-deps -e /opt/app
# Root-owned code, readable by everyone whatever the build machine's umask, writable by no one else.
RUN chmod -R u=rwX,go=rX /opt/app
# Model weights: grand-challenge unpacks the organiser's model tarball into /opt/ml/model (read-only).
# To bake weights into the image instead, copy an nnU-Net results folder to /opt/app/model, e.g.
#   COPY model/ /opt/app/model/
USER user
ENTRYPOINT ["python", "-m", "algorithm"]

# ---------------------------------------------------------------------------------------------------
FROM --platform=linux/amd64 ${PYTHON_IMAGE} AS evaluation
ARG PRUNE_TESTS
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/opt/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system user \
    && useradd --system --gid user --create-home --home-dir /home/user --shell /usr/sbin/nologin user \
    && mkdir -p /opt/app /opt/ml/input/data/ground_truth
WORKDIR /opt/app
COPY evaluation/requirements.txt /opt/app/evaluation/requirements.txt
RUN python -m pip install --no-cache-dir -r /opt/app/evaluation/requirements.txt \
    && python -c "$PRUNE_TESTS"
COPY pyproject.toml LICENSE /opt/app/
COPY petct/ /opt/app/petct/
COPY evaluation/ /opt/app/evaluation/
RUN python -m pip install --no-cache-dir --no-deps -e /opt/app
RUN chmod -R u=rwX,go=rX /opt/app
USER user
ENTRYPOINT ["python", "-m", "evaluation"]

# ---------------------------------------------------------------------------------------------------
# The service runs the algorithm's engine in-process and scores with the evaluation's code.
FROM algorithm AS app
ARG PRUNE_TESTS
USER root
# The service falls back to the baseline when it has no model (the algorithm image's nnunet is for jobs).
ENV PETCT_KIT_ENGINE=auto
# Jobs and uploads live in /var/lib/petct: with --read-only, mount a volume there
# (docker run --read-only --tmpfs /tmp -v petct-data:/var/lib/petct ...).
RUN mkdir -p /var/lib/petct && chown user:user /var/lib/petct
COPY evaluation/requirements.txt /opt/app/evaluation/requirements.txt
COPY app/requirements.txt /opt/app/app/requirements.txt
# The report's and the web pages' plotting and templates (not in the evaluation image: scoring never loads them).
COPY evaluation/report-requirements.txt /opt/app/evaluation/report-requirements.txt
RUN python -m pip install --no-cache-dir -r /opt/app/evaluation/requirements.txt -r /opt/app/app/requirements.txt \
    -r /opt/app/evaluation/report-requirements.txt \
    && python -c "$PRUNE_TESTS"
COPY evaluation/ /opt/app/evaluation/
COPY app/ /opt/app/app/
# The dry run's container-engine settings (docker or podman) and image checks.
COPY images/ /opt/app/images/
# Again, now that the tree holds evaluation/, app/ and images/ too.
RUN python -m pip install --no-cache-dir --no-deps -e /opt/app
RUN chmod -R u=rwX,go=rX /opt/app
USER user
VOLUME ["/var/lib/petct"]
EXPOSE 8000
# Listening beyond loopback needs a bearer token: docker run -e PETCT_KIT_TOKEN=... -p 8000:8000 IMAGE
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["python", "-m", "app"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/var/lib/petct"]
