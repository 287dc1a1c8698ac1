"""Session-wide test settings.

Tests compile many identical programs (the tiny model's init and forward recur across files);
JAX's persistent compilation cache lets every compilation after the first be a lookup, also
across pytest-xdist workers. Set before any test module imports jax.
"""

import os
import tempfile

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "xlsr_jax_test_jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
