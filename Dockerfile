# syntax=docker/dockerfile:1
# The gateway's image (helm/interlock deploys it): docker build -t interlock:0.1.0 .
# Dependencies come from uv.lock exactly (--frozen); the runtime stage holds the virtualenv and
# nothing to build with, and runs as an ordinary user (the tool sandbox wants one).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
# The image's own Python, never a downloaded one: the runtime stage has the same at the same path,
# which the virtualenv's interpreter link points to. Bytecode is compiled now because the
# runtime's root filesystem is read-only.
ENV UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lockfile changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project
COPY . .
# The gateway itself, installed as a wheel so the image needs no source checkout.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 interlock \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin interlock \
    && install -d -o 10001 -g 10001 /var/lib/interlock
COPY --from=build /app/.venv /app/.venv
# What `docker run` serves without a mounted config: the example catalogue with the simulator
# (the chart mounts its own file over it).
COPY examples/gateway.yaml /etc/interlock/gateway.yaml
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    INTERLOCK_HOST=0.0.0.0 \
    INTERLOCK_STORE=sqlite:////var/lib/interlock/interlock.db
USER 10001:10001
WORKDIR /var/lib/interlock
EXPOSE 8080
# uvicorn drains open streams on SIGTERM (up to 30 s) before the process exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["interlock"]
CMD ["serve", "--config", "/etc/interlock/gateway.yaml"]
