"""Imports TensorFlow for the input pipeline only: CPU only, quiet, bounded threads.

TensorFlow is used here for tf.data (parallel map, prefetch) and TFRecord/TFDS I/O. It must never
claim an accelerator that JAX needs, and its C++ start-up chatter must not flood training logs.
"""

from __future__ import annotations

import os

_TF = None


def import_tf():
    """Returns the `tensorflow` module, configured CPU-only and quiet on first import."""
    global _TF
    if _TF is not None:
        return _TF
    # Must be set before TensorFlow's C++ runtime loads; setdefault keeps a user's explicit choice.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    try:
        # Hide every GPU/TPU from TensorFlow so JAX keeps all accelerator memory.
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):
        pass  # runtime already initialised by someone else; nothing left to hide
    _TF = tf
    return tf


def import_tfds():
    """Returns `tensorflow_datasets`, with TensorFlow imported first through `import_tf`."""
    import_tf()  # CPU-only, quiet, before TFDS pulls TensorFlow in
    import tensorflow_datasets as tfds

    return tfds
