# syntax=docker/dockerfile:1
#
# One image for every service of the twin; the argument picks the service:
#   docker run --rm change6-twin:dev services.orbiter
#
# Stage 1 builds wheels (with a compiler at hand for any dependency that has
# no wheel for the target platform); stage 2 installs them into a clean slim
# image that carries no compiler, no pip and no source tree.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, from the lock alone, so that editing the code does not
# rebuild numpy/scipy/grpcio wheels. requirements/runtime.lock pins every
# runtime dependency and the build tools with hashes (`./task lock` writes it):
# the image gets exactly the versions CI tested, never a fresh resolution.
COPY requirements/runtime.lock ./requirements/runtime.lock
RUN pip install --require-hashes -r requirements/runtime.lock \
 && pip wheel --require-hashes --wheel-dir /wheels -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="change6-twin" \
      org.opencontainers.image.description="Chang'e-6 mission digital twin services (NATS + gRPC)" \
      org.opencontainers.image.licenses="Apache-2.0"
# HOME and MPLCONFIGDIR point into /tmp because the pods run with a read-only
# root filesystem and an emptyDir on /tmp; nothing else is written at run time.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    TWIN_GRPC_HOST=0.0.0.0 \
    TWIN_GRPC_PORT=50051 \
    TWIN_METRICS_PORT=9090 \
    TWIN_LOG_FORMAT=json
# uid/gid 10001 is what the pods' securityContext runAsUser/runAsGroup expect.
RUN groupadd --system --gid 10001 twin \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin twin
# The wheels are bind-mounted, not copied, so they leave no layer behind; pip
# and setuptools are removed afterwards since nothing installs at run time.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels change6-twin \
 && pip uninstall -y pip setuptools wheel
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 9090
ENTRYPOINT ["python", "-m"]
CMD ["services.ground"]
