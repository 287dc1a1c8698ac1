"""Which attention implementation runs, and that the cuDNN route masks the same keys as XLA's.

No GPU here: the cuDNN call is either rerouted to XLA with the same arguments (to check the key
lengths it is given) or left to fail as it does without cuDNN (to check the fallback).
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xlsr_jax.models import Wav2Vec2Config, transformer


def _config(**overrides) -> Wav2Vec2Config:
    tiny = Wav2Vec2Config(hidden_size=64, num_attention_heads=4, intermediate_size=128)
    return dataclasses.replace(tiny, **overrides)


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.standard_normal((3, 11, 4, 16)), jnp.float32) for _ in range(3))
    lengths = np.array([11, 7, 2])
    padding_mask = jnp.asarray(np.arange(11)[None, :] >= lengths[:, None])  # right padding
    return q, k, v, padding_mask, lengths


@pytest.fixture
def on_gpu(monkeypatch):
    """Makes `attention_implementation` believe it runs on a GPU."""
    monkeypatch.setattr(transformer.jax, "default_backend", lambda: "gpu")


def test_auto_is_xla_off_gpu():
    for dtype in ("float32", "bfloat16"):
        assert transformer.attention_implementation(_config(dtype=dtype)) is None


@pytest.mark.parametrize(
    "hidden,heads,dtype,expected",
    [
        (1024, 16, "bfloat16", "cudnn"),  # XLS-R 300M: head 64
        (1280, 16, "bfloat16", "cudnn"),  # XLS-R 1B: head 80
        (1920, 16, "float16", "cudnn"),  # XLS-R 2B: head 120
        (1024, 16, "float32", None),  # cuDNN's fused attention is 16-bit only
        (2560, 16, "bfloat16", None),  # head 160: larger than cuDNN takes
        (96, 8, "bfloat16", None),  # head 12: not a multiple of 8
    ],
)
def test_auto_on_gpu(on_gpu, hidden, heads, dtype, expected):
    cfg = _config(hidden_size=hidden, num_attention_heads=heads, dtype=dtype)
    assert transformer.attention_implementation(cfg) == expected


def test_explicit_implementation_is_kept(on_gpu):
    assert transformer.attention_implementation(_config(attention_impl="xla", dtype="bfloat16")) == "xla"
    assert transformer.attention_implementation(_config(attention_impl="cudnn")) == "cudnn"


def test_cudnn_route_passes_key_lengths_that_mask_like_xla(monkeypatch):
    q, k, v, padding_mask, lengths = _inputs()
    calls = []
    real = jax.nn.dot_product_attention

    def as_xla(*args, implementation=None, **kwargs):
        calls.append((implementation, kwargs))
        return real(*args, implementation="xla", **kwargs)

    monkeypatch.setattr(transformer.jax.nn, "dot_product_attention", as_xla)
    routed = transformer.dot_product_attention(q, k, v, padding_mask, 0.25, "cudnn")
    (implementation, kwargs), *_ = calls
    assert implementation == "cudnn" and kwargs.get("mask") is None
    np.testing.assert_array_equal(kwargs["key_value_seq_lengths"], lengths)
    masked = transformer.dot_product_attention(q, k, v, padding_mask, 0.25, None)
    np.testing.assert_allclose(routed, masked, rtol=1e-6, atol=1e-6)
    # ... and the mask really matters: keys past each length change nothing.
    k2 = jnp.where(padding_mask[:, :, None, None], 100.0, k)
    np.testing.assert_allclose(transformer.dot_product_attention(q, k2, v, padding_mask, 0.25, None), masked, atol=1e-6)


def test_auto_cudnn_falls_back_to_xla_where_cudnn_is_missing(on_gpu, caplog):
    q, k, v, padding_mask, _ = _inputs(1)
    cfg = _config(dtype="bfloat16")
    q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
    with caplog.at_level(logging.WARNING, logger=transformer.log.name):
        out = jax.jit(lambda q, k, v, m: transformer.attend(q, k, v, m, 0.25, cfg))(q, k, v, padding_mask)
    assert "using XLA attention" in caplog.text
    expected = transformer.dot_product_attention(q, k, v, padding_mask, 0.25, None)
    np.testing.assert_array_equal(out, expected)
    # An explicit choice is not second-guessed: the missing cuDNN is an error.
    with pytest.raises(RuntimeError):
        transformer.attend(q, k, v, padding_mask, 0.25, _config(attention_impl="cudnn", dtype="bfloat16"))
