# syntax=docker/dockerfile:1
# One Dockerfile, three images (build with --target):
#   algorithm   - the inference container grand-challenge runs per study (PyTorch + CUDA runtime)
#   evaluation  - the scoring container (slim Python, no torch)
#   app         - the HTTP service (python -m app serve), which runs the algorithm's engine itself
# Every image: linux/amd64, a non-root user that exists in /etc/passwd, code in /opt/app, exec-form
# entry points, unbuffered output. See README.md for build, dry-run and `docker save | gzip` upload.

ARG PYTORCH_IMAGE=pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------
FROM --platform=linux/amd64 ${PYTORCH_IMAGE} AS algorithm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The platform refuses root and hangs on a USER missing from /etc/passwd: create it, with a home.
RUN groupadd --system user \
    && useradd --system --gid user --create-home --home-dir /home/user --shell /usr/sbin/nologin user \
    && mkdir -p /opt/app /opt/ml/model \
    && chown user:user /opt/app /opt/ml/model
WORKDIR /opt/app
# torch comes with the base image; the requirement's range keeps pip from replacing it.
COPY --chown=user:user algorithm/requirements.txt /opt/app/algorithm/requirements.txt
RUN python -m pip install --no-cache-dir -r /opt/app/algorithm/requirements.txt
COPY --chown=user:user petct/ /opt/app/petct/
COPY --chown=user:user algorithm/ /opt/app/algorithm/
# Model weights: grand-challenge unpacks the organiser's model tarball into /opt/ml/model (read-only).
# To bake weights into the image instead, copy an nnU-Net results folder to /opt/app/model, e.g.
#   COPY --chown=user:user model/ /opt/app/model/
USER user
ENTRYPOINT ["python", "-m", "algorithm"]

# ---------------------------------------------------------------------------------------------------
FROM --platform=linux/amd64 ${PYTHON_IMAGE} AS evaluation
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system user \
    && useradd --system --gid user --create-home --home-dir /home/user --shell /usr/sbin/nologin user \
    && mkdir -p /opt/app /opt/ml/input/data/ground_truth \
    && chown user:user /opt/app
WORKDIR /opt/app
COPY --chown=user:user evaluation/requirements.txt /opt/app/evaluation/requirements.txt
RUN python -m pip install --no-cache-dir -r /opt/app/evaluation/requirements.txt
COPY --chown=user:user petct/ /opt/app/petct/
COPY --chown=user:user evaluation/ /opt/app/evaluation/
USER user
ENTRYPOINT ["python", "-m", "evaluation"]

# ---------------------------------------------------------------------------------------------------
# The service runs the algorithm's engine in-process and scores with the evaluation's code.
FROM algorithm AS app
USER root
RUN mkdir -p /var/lib/petct && chown user:user /var/lib/petct
COPY --chown=user:user evaluation/requirements.txt /opt/app/evaluation/requirements.txt
COPY --chown=user:user app/requirements.txt /opt/app/app/requirements.txt
# The report's and the web pages' plotting and templates (not in the evaluation image: scoring never loads them).
COPY --chown=user:user evaluation/report-requirements.txt /opt/app/evaluation/report-requirements.txt
RUN python -m pip install --no-cache-dir -r /opt/app/evaluation/requirements.txt -r /opt/app/app/requirements.txt \
    -r /opt/app/evaluation/report-requirements.txt
COPY --chown=user:user petct/ /opt/app/petct/
COPY --chown=user:user evaluation/ /opt/app/evaluation/
COPY --chown=user:user app/ /opt/app/app/
USER user
EXPOSE 8000
# Listening beyond loopback needs a bearer token: docker run -e PETCT_KIT_TOKEN=... -p 8000:8000 IMAGE
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["python", "-m", "app"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/var/lib/petct"]
