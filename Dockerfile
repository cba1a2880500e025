# syntax=docker/dockerfile:1
# The Kagent image, for those who build with Docker: one image for the controller and the agent
# pods (`kagent controller`, `kagent runtime`).
#   docker build -t ghcr.io/kagent-operator/kagent:0.1.0 .
# `make image` builds the same image without Docker or any base image (hack/image/build.py:
# mmdebstrap, then the same install steps). hack/image/image.json describes the image once and a
# test holds this file to it: the same Debian suite and packages, the same locked wheels installed
# by the same script, the same user, environment and entrypoint.
ARG DEBIAN_SUITE=bookworm

# Build stage: the venv, installed from the locked wheels by hack/image/install.py and stripped.
FROM debian:${DEBIAN_SUITE}-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip libstdc++6 ca-certificates libseccomp2 \
      binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kagent ./kagent
COPY hack/image ./hack/image
RUN python3 -m pip wheel --no-deps --wheel-dir /wheels . \
 && python3 -m pip download --no-deps --only-binary=:all: --require-hashes --dest /wheels \
      -r hack/image/requirements.lock -r hack/image/tools.lock
RUN python3 hack/image/install.py /wheels && hack/image/strip.sh /opt/kagent

FROM debian:${DEBIAN_SUITE}-slim
ARG KAGENT_VERSION=0.1.0
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libstdc++6 ca-certificates tini libseccomp2 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/kagent /opt/kagent
COPY hack/image/install.py hack/image/image.json /tmp/kagent-build/
RUN python3 /tmp/kagent-build/install.py --user-only && rm -rf /tmp/kagent-build
LABEL org.opencontainers.image.title="kagent" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${KAGENT_VERSION}"
# Non-root, and nothing written outside /tmp: the pods run with a read-only root file system.
USER 65532:65532
WORKDIR /home/kagent
ENV PATH=/opt/kagent/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/home/kagent \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/kagent/bin/kagent"]
CMD ["--help"]
