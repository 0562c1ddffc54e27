# syntax=docker/dockerfile:1
# mtls-operator image: slim, non-root, read-only-root-filesystem friendly.
#   docker build -t mtls-operator:dev .
# Pin the base by digest in your registry mirror (docker buildx imagetools inspect python:3.11.14-slim-bookworm);
# this repository's build machines have no Docker engine, so the digest could not be resolved here.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/mtls-operator
COPY pyproject.toml README.md ./
COPY operator ./operator
# The runtime dependencies are pinned in pyproject.toml; the two it leaves open are pinned here.
RUN /opt/mtls-operator/bin/pip install "aiohttp==3.14.5" "PyYAML==6.0.3" . \
 && /opt/mtls-operator/bin/python -c "import mtls_operator.main, cryptography, kopf" \
 && find /opt/mtls-operator -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mtls-operator" \
      org.opencontainers.image.description="Mutual-TLS certificates (ECDSA, Ed25519, RSA, ML-DSA) for Kubernetes workloads" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/mtls-operator /opt/mtls-operator
ENV PATH=/opt/mtls-operator/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# 65532: the conventional "nonroot" uid; the chart runs it with runAsNonRoot and a read-only root fs.
USER 65532:65532
EXPOSE 9402
ENTRYPOINT ["mtls-operator"]
CMD ["--all-namespaces"]
