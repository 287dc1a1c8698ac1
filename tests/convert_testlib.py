"""Shared pieces of the conversion and parity tests: tiny configs, random HF/our models."""

from __future__ import annotations

import numpy as np

# Tiny but structurally complete: 3 conv layers (stride 20, receptive field 30), 2 blocks of 4
# heads, a 2 x 12 codebook. Dropout and LayerDrop are set non-zero on purpose: eval mode must
# switch them off on both sides.
TINY_HF = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 40,
    "conv_dim": (16, 24, 32),
    "conv_stride": (5, 2, 2),
    "conv_kernel": (10, 3, 3),
    "num_conv_pos_embeddings": 8,
    "num_conv_pos_embedding_groups": 4,
    "num_codevectors_per_group": 12,
    "num_codevector_groups": 2,
    "codevector_dim": 16,
    "proj_codevector_dim": 12,
    "num_negatives": 5,
    "mask_time_prob": 0.3,
    "mask_time_length": 3,
    "vocab_size": 10,
    "num_labels": 3,
    "classifier_proj_size": 8,
    "hidden_dropout": 0.1,
    "attention_dropout": 0.1,
    "layerdrop": 0.1,
}

MODES = [("group", False), ("group", True), ("layer", False), ("layer", True)]
MODE_IDS = [f"{n}-{'preLN' if s else 'postLN'}" for n, s in MODES]


def hf_config(norm: str, stable: bool, **overrides):
    """A transformers Wav2Vec2Config (conv bias with the layer-norm extractor, as published)."""
    import transformers

    values = {**TINY_HF, "feat_extract_norm": norm, "do_stable_layer_norm": stable, "conv_bias": norm == "layer"}
    values.update(overrides)
    return transformers.Wav2Vec2Config(**values)


def audio_batch(lengths=(1600, 1100), seed=0):
    """float32 [B, max(lengths)] noise, zero after each length, and the padding mask (True = pad)."""
    rng = np.random.RandomState(seed)
    total = max(lengths)
    audio = rng.standard_normal((len(lengths), total)).astype(np.float32)
    padding = np.arange(total)[None, :] >= np.asarray(lengths)[:, None]
    audio[padding] = 0.0
    return audio, padding


def random_params(shapes, seed=0):
    """Random parameters for our tree with O(1) activations: kernels ~ N(0, 1/fan_in),
    norm scales ~ 1 + N(0, 0.1), everything else ~ N(0, 0.1)."""
    import jax

    rng = np.random.RandomState(seed)

    def make(path, s):
        name = jax.tree_util.keystr(path)
        if "kernel" in name or "weight_v" in name:
            # Our kernels are [*inputs, out] except attention q/k/v [in, heads, head_dim] and
            # out_proj [heads, head_dim, out]; convs are [width, in, out].
            if "out_proj" in name:
                fan_in = s.shape[-3] * s.shape[-2]
            elif "_proj" in name and "attention" in name:
                fan_in = s.shape[-3]
            elif len(s.shape) >= 3 and ("conv" in name or "weight_v" in name):
                fan_in = s.shape[-3] * s.shape[-2]
            else:
                fan_in = s.shape[-2]
            return (rng.standard_normal(s.shape) / np.sqrt(max(int(fan_in), 1))).astype(np.float32)
        if "scale" in name:
            return (1.0 + 0.1 * rng.standard_normal(s.shape)).astype(np.float32)
        if "codevectors" in name:
            return rng.uniform(size=s.shape).astype(np.float32)
        return (0.1 * rng.standard_normal(s.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(make, shapes)


def our_param_shapes(config, arch):
    """Our model's parameter shapes by tracing init (no compilation)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from xlsr_jax import models

    model = models.model_class(arch)(config)
    shapes = jax.eval_shape(
        lambda: model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, 800)), None, deterministic=True)
    )
    return nn.meta.unbox(shapes["params"])


def max_abs_diff(a, b, valid=None):
    """max |a - b| over frames where valid (bool [B, T]) is True, or everywhere."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if valid is not None:
        a, b = a[valid], b[valid]
    return float(np.abs(a - b).max())
