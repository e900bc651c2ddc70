# syntax=docker/dockerfile:1
# One image recipe for the five FinCart programs. Build context: the repository root (the uv workspace and uv.lock):
#   docker build --build-arg PACKAGE=fincart-ingest -t fincart-ingest .
# PACKAGE is a uv workspace member whose console script of the same name is the entrypoint: fincart-ingest,
# fincart-processor (also runs fincart-migrate), fincart-sync, fincart-operator, fincart-chaos. No EXPOSE: the
# listening port is FINCART_HTTP_PORT, set by the chart with its containerPort.
# skaffold.yaml passes PACKAGE; tests/integration/test_deploy_images.py replays the builder for each package.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13

FROM ${UV_IMAGE} AS uv

# builder: the package and its locked dependencies into /app/.venv (no dev group, not editable)
FROM ${PYTHON_IMAGE} AS builder
ARG PACKAGE
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY libs libs
COPY services services
COPY chaos chaos
COPY chaos-operator chaos-operator
# the entrypoint is a link to the package's console script, so the final stage needs no per-package line
RUN --mount=type=cache,target=/root/.cache/uv \
    test -n "${PACKAGE}" \
    && uv sync --frozen --no-dev --no-editable --package "${PACKAGE}" \
    && ln -s "${PACKAGE}" /app/.venv/bin/fincart-entrypoint

# final: the same slim Python, the venv, a non-root user; no uv, no compilers, no sources
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 fincart \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin fincart
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /tmp
USER 10001:10001
ENTRYPOINT ["fincart-entrypoint"]
