"""hwnas_jax: hardware-aware evolutionary NAS with a representation-similarity proxy."""

__version__ = '0.1.0'
