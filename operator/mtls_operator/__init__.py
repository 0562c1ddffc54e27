"""mtls-operator: mutual-TLS identities for Kubernetes workloads, classical and ML-DSA."""

__version__ = "0.1.0"
