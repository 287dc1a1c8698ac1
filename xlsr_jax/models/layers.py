"""Small building blocks shared by the model: dense/norm layers with logical axis names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xlsr_jax import sharding as shd

Initializer = Any

# PyTorch's nn.Linear / nn.Conv1d default: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), ...).
torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int) -> Initializer:
    """PyTorch's default bias init for Linear/Conv: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / max(fan_in, 1) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as torch.nn.functional.gelu: the tanh approximation breaks parity."""
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS = {"gelu": gelu, "relu": jax.nn.relu, "swish": jax.nn.silu, "gelu_new": jax.nn.gelu}


def activation(name: str):
    """Looks up an activation function by its HF config name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class Dense(nn.Module):
    """A linear layer whose kernel and bias carry logical axis names.

    `features` and `axis` follow `nn.DenseGeneral`; `kernel_axes` names every kernel dimension
    (input dims first, then output dims) and the bias takes the output dims' names.
    """

    features: int | Sequence[int]
    kernel_axes: tuple[str, ...]
    axis: int | Sequence[int] = -1
    use_bias: bool = True
    dtype: Any = jnp.float32
    kernel_init: Initializer = torch_default_kernel_init
    bias_init: Initializer | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
        axis = (self.axis,) if isinstance(self.axis, int) else tuple(self.axis)
        axis = tuple(a % x.ndim for a in axis)
        in_shape = tuple(x.shape[a] for a in axis)
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
            in_shape + features,
            jnp.float32,
        )
        contract = (axis, tuple(range(len(axis))))
        y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype), (contract, ((), ())))
        if self.use_bias:
            fan_in = int(np.prod(in_shape))
            bias_init = self.bias_init or torch_default_bias_init(fan_in)
            out_axes = self.kernel_axes[len(axis) :]
            bias = self.param("bias", nn.with_logical_partitioning(bias_init, out_axes), features, jnp.float32)
            y = y + bias.astype(self.dtype)
        return y


class Fp32Norm(nn.Module):
    """Normalisation over `axis` computed in float32, with per-channel scale and bias.

    The channel axis is last; `axis=-1` is a LayerNorm (fairseq's Fp32LayerNorm), `axis=1` on
    [batch, time, channels] a GroupNorm with one group per channel (fairseq's Fp32GroupNorm).
    """

    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    axis: int = -1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, (shd.NORM,)), (features,), jnp.float32
        )
        bias = self.param(
            "bias", nn.with_logical_partitioning(nn.initializers.zeros, (shd.NORM,)), (features,), jnp.float32
        )
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=self.axis, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=self.axis, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
        return y.astype(self.dtype)


class LayerNorm(Fp32Norm):
    """LayerNorm over the last axis computed in float32 (fairseq's Fp32LayerNorm)."""


def dropout(module: nn.Module, rate: float, x: jax.Array, deterministic: bool) -> jax.Array:
    """Inverted dropout drawing from the module's 'dropout' stream; a no-op at rate 0."""
    if deterministic or rate <= 0.0:
        return x
    return nn.Dropout(rate=rate)(x, deterministic=False)
