"""The positional conv's custom kernel gradient equals autodiff of XLA's grouped convolution."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xlsr_jax.models.transformer import _grouped_conv, grouped_conv


@pytest.mark.parametrize("width,groups", [(16, 4), (7, 1), (8, 8)])
def test_grouped_conv_matches_autodiff(width, groups):
    rng = np.random.default_rng(width + groups)
    x = jnp.asarray(rng.standard_normal((2, 23, 32)), jnp.float32)  # [batch, time, channels]
    kernel = jnp.asarray(rng.standard_normal((width, 32 // groups, 32)) * 0.1, jnp.float32)
    pad = width // 2

    def loss(conv):
        # A non-linear loss so every output position gets a different cotangent.
        return jax.jit(jax.value_and_grad(lambda v, k: jnp.sum(jnp.sin(conv(v, k, pad, groups))), argnums=(0, 1)))

    (ref_value, (ref_dx, ref_dk)) = loss(_grouped_conv)(x, kernel)
    (value, (dx, dk)) = loss(grouped_conv)(x, kernel)
    np.testing.assert_array_equal(value, ref_value)  # the forward pass is XLA's conv, unchanged
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dk, ref_dk, rtol=1e-4, atol=1e-4)
    assert dk.shape == kernel.shape
