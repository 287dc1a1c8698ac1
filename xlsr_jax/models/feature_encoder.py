"""The convolutional feature encoder: raw 16 kHz waveform -> 50 Hz latent frames.

Matches fairseq's `ConvFeatureExtractionModel` (and HF's `Wav2Vec2FeatureEncoder`) in both modes:
- "group": GroupNorm with one group per channel after the first conv only, no conv bias (BASE).
  GroupNorm normalises each channel over the whole time axis, padding included, so padding
  changes every frame's output, exactly as in fairseq: such models should be run unpadded
  (or with batches cropped to equal length, as fairseq pretrains them).
- "layer": LayerNorm over channels after every conv, conv bias (XLSR-53, XLS-R). Padded and
  unpadded inputs give the same valid frames.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from xlsr_jax import sharding as shd
from xlsr_jax.models.config import Wav2Vec2Config
from xlsr_jax.models.layers import Fp32Norm, LayerNorm, activation, torch_default_bias_init


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def scale_gradient(x: jax.Array, scale: float) -> jax.Array:
    """Identity forward, gradient multiplied by `scale` (fairseq's GradMultiply)."""
    return x


def _scale_gradient_fwd(x, scale):
    return x, None


def _scale_gradient_bwd(scale, _, g):
    return (g * scale,)


scale_gradient.defvjp(_scale_gradient_fwd, _scale_gradient_bwd)


class Conv1D(nn.Module):
    """A 1-D convolution over [batch, time, channels] with PyTorch's default initialisation."""

    features: int
    kernel_size: int
    stride: int = 1
    use_bias: bool = True
    feature_group_count: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_features = x.shape[-1]
        fan_in = in_features // self.feature_group_count * self.kernel_size
        # kaiming_normal_ as fairseq's conv feature extractor initialises its convs.
        kernel_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(kernel_init, (shd.CONV_WIDTH, shd.CONV_IN, shd.CONV_OUT)),
            (self.kernel_size, in_features // self.feature_group_count, self.features),
            jnp.float32,
        )
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            window_strides=(self.stride,),
            padding="VALID",
            dimension_numbers=("NWC", "WIO", "NWC"),
            feature_group_count=self.feature_group_count,
        )
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(torch_default_bias_init(fan_in), (shd.CONV_OUT,)),
                (self.features,),
                jnp.float32,
            )
            y = y + bias.astype(self.dtype)
        return y


class GroupNormPerChannel(Fp32Norm):
    """GroupNorm with as many groups as channels: each channel normalised over time (fp32).

    Input [batch, time, channels]: the statistics include padded frames, as in fairseq.
    """

    axis: int = 1


class ConvLayer(nn.Module):
    """conv -> (norm) -> activation, one layer of the feature encoder."""

    config: Wav2Vec2Config
    layer_id: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        dtype = cfg.compute_dtype
        x = Conv1D(
            features=cfg.conv_dim[self.layer_id],
            kernel_size=cfg.conv_kernel[self.layer_id],
            stride=cfg.conv_stride[self.layer_id],
            use_bias=cfg.conv_bias,
            dtype=dtype,
            name="conv",
        )(x)
        if cfg.feat_extract_norm == "layer":
            x = LayerNorm(epsilon=1e-5, dtype=dtype, name="layer_norm")(x)
        elif self.layer_id == 0:
            x = GroupNormPerChannel(epsilon=1e-5, dtype=dtype, name="layer_norm")(x)
        return activation(cfg.feat_extract_activation)(x)


class FeatureEncoder(nn.Module):
    """Stack of `ConvLayer`s; `feature_grad_mult` scales the gradient that reaches it."""

    config: Wav2Vec2Config

    @nn.compact
    def __call__(self, audio: jax.Array) -> jax.Array:
        """audio: [batch, samples] -> features [batch, frames, conv_dim[-1]]."""
        x = audio[..., None]  # [batch, samples, 1]
        x = nn.with_logical_constraint(x, (shd.ACT_BATCH, shd.ACT_SAMPLES, None))
        for i in range(len(self.config.conv_dim)):
            x = ConvLayer(self.config, i, name=f"conv_layers_{i}")(x)
        x = nn.with_logical_constraint(x, (shd.ACT_BATCH, shd.ACT_TIME, None))
        mult = self.config.feature_grad_mult
        if mult <= 0.0:
            x = jax.lax.stop_gradient(x)
        elif mult != 1.0:
            x = scale_gradient(x, mult)
        return x
