# One image for the controller and the agent pods (`kagent controller`, `kagent runtime`).
# Build: docker build -t ghcr.io/kagent-operator/kagent:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kagent ./kagent
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# The restricted security context the controller renders: non-root, read-only root file system
# (the runtime writes only to /tmp, an emptyDir).
USER 65532:65532
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
ENTRYPOINT ["kagent"]
CMD ["--help"]
