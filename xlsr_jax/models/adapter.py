"""The convolutional adapter between the wav2vec 2.0 encoder and a text decoder.

HF `Wav2Vec2Adapter` (modeling_wav2vec2.py), used by the XLS-R speech-translation models
(Babu et al. 2021 §5.1, `facebook/wav2vec2-xls-r-*-21-to-en`): an optional linear projection
plus LayerNorm to `output_hidden_size`, then `num_adapter_layers` strided Conv1d layers
(`adapter_kernel_size`, `adapter_stride`, padding 1) that double the channels, each followed by
a GLU over channels. Three stride-2 layers turn the encoder's 50 Hz frames into 6.25 Hz.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from xlsr_jax import sharding as shd
from xlsr_jax.models.config import Wav2Vec2Config
from xlsr_jax.models.layers import Dense, LayerNorm, torch_default_bias_init, torch_default_kernel_init

# HF's Conv1d in the adapter has padding=1 whatever the kernel size.
ADAPTER_PADDING = 1


class AdapterLayer(nn.Module):
    """Conv1d(width -> 2 width, kernel, stride, padding 1) then GLU over channels."""

    config: Wav2Vec2Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [batch, frames, width]
        cfg = self.config
        width, k = cfg.adapter_hidden_size, cfg.adapter_kernel_size
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(torch_default_kernel_init, (shd.CONV_WIDTH, shd.CONV_IN, shd.CONV_OUT)),
            (k, width, 2 * width),
            jnp.float32,
        )
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(torch_default_bias_init(k * width), (shd.CONV_OUT,)),
            (2 * width,),
            jnp.float32,
        )
        dtype = cfg.compute_dtype
        y = jax.lax.conv_general_dilated(
            x.astype(dtype),
            kernel.astype(dtype),
            window_strides=(cfg.adapter_stride,),
            padding=[(ADAPTER_PADDING, ADAPTER_PADDING)],
            dimension_numbers=("NWC", "WIO", "NWC"),
        )
        y = y + bias.astype(dtype)  # [batch, frames_out, 2 width]
        # torch.nn.functional.glu(dim=channels): first half * sigmoid(second half).
        value, gate = jnp.split(y, 2, axis=-1)
        return value * jax.nn.sigmoid(gate)


class Adapter(nn.Module):
    """Projection (when output_hidden_size != hidden_size) and the strided GLU conv layers.

    In training each layer is skipped with probability `layerdrop`, as HF does; the skip is a
    `select` between static shapes only when the layer keeps the length (stride 1), otherwise the
    layer always runs (a skipped strided layer would change the output's shape).
    """

    config: Wav2Vec2Config

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        """x: [batch, frames, hidden_size] -> [batch, frames', adapter_hidden_size]."""
        cfg = self.config
        dtype = cfg.compute_dtype
        if cfg.adapter_hidden_size != cfg.hidden_size:
            x = Dense(cfg.adapter_hidden_size, (shd.EMBED, shd.CONV_IN), dtype=dtype, name="proj")(x)
            x = LayerNorm(1e-5, dtype, name="proj_layer_norm")(x)  # torch nn.LayerNorm default eps
        for i in range(cfg.num_adapter_layers):
            y = AdapterLayer(cfg, name=f"layers_{i}")(x)
            if not deterministic and cfg.layerdrop > 0.0 and y.shape == x.shape:
                drop = jax.random.uniform(self.make_rng("dropout"), ()) < cfg.layerdrop
                y = jnp.where(drop, x, y)
            x = y
        return nn.with_logical_constraint(x, (shd.ACT_BATCH, shd.ACT_TIME, shd.ACT_EMBED))
