"""XLSR / XLS-R (wav2vec 2.0) in JAX/Flax."""

__version__ = "0.1.0"
