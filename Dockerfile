# syntax=docker/dockerfile:1
# Generated from mtls_operator/testing/images.py (OPERATOR_RECIPE) by `make dockerfile`; do not edit.
# The test node builds the same image without Docker (mmdebstrap + pip; see docs/node.md).
#   docker build -t mtls-operator:dev .
# Pin the base by digest in your registry mirror
# (docker buildx imagetools inspect debian:bookworm-slim).
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS base
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    python3 python3-venv ca-certificates \
 && rm -rf /usr/share/doc /usr/share/man /usr/share/info /usr/share/locale /var/cache/apt /var/lib/apt/lists /var/log \
 && echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin' >> /etc/passwd && echo 'nonroot:x:65532:' >> /etc/group

FROM base AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python3 -m venv /opt/mtls-operator
COPY pyproject.toml README.md ./
COPY operator ./operator
# The runtime dependencies are pinned in pyproject.toml; the two it leaves open are pinned here.
RUN /opt/mtls-operator/bin/pip install "aiohttp==3.14.5" "PyYAML==6.0.3" . \
 && /opt/mtls-operator/bin/python -c "import mtls_operator.main, cryptography, kopf" \
 && rm -rf /opt/mtls-operator/lib/python3*/site-packages/mtls_operator/testing \
 && find /opt/mtls-operator -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/mtls-operator/bin/pip uninstall -q -y pip

FROM base
LABEL org.opencontainers.image.title="mtls-operator" \
      org.opencontainers.image.description="Mutual-TLS certificates (ECDSA, Ed25519, RSA, ML-DSA) for Kubernetes workloads" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/mtls-operator /opt/mtls-operator
ENV PATH=/opt/mtls-operator/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# 65532: the conventional "nonroot" uid; the chart runs it with runAsNonRoot and a read-only root fs.
USER 65532:65532
EXPOSE 9402
ENTRYPOINT ["mtls-operator"]
CMD ["--all-namespaces"]
