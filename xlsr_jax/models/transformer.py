"""The Transformer context network: positional conv embedding, attention, encoder blocks.

Semantics follow fairseq's `TransformerEncoder` / HF's `Wav2Vec2Encoder` (post-LN, BASE) and
`Wav2Vec2EncoderStableLayerNorm` (pre-LN "layer_norm_first", XLSR-53 / XLS-R), including which
tensors count as `hidden_states`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xlsr_jax import sharding as shd
from xlsr_jax.models.config import Wav2Vec2Config
from xlsr_jax.models.layers import Dense, LayerNorm, activation, dropout, gelu

log = logging.getLogger(__name__)

# fairseq's init_bert_params for the Transformer's linear layers.
_bert_init = nn.initializers.normal(stddev=0.02)
_zeros = nn.initializers.zeros
BertDense = partial(Dense, kernel_init=_bert_init, bias_init=_zeros)

# Parameter names of the Transformer blocks under `encoder/`: one stacked subtree when scanned
# (leading axis = layer, logical axis `layers`), else one subtree per block.
SCANNED_LAYERS = "layers"


def layer_name(i: int) -> str:
    """The parameter subtree of block `i` in an unscanned encoder (`layers_{i}`)."""
    return f"{SCANNED_LAYERS}_{i}"


def _grouped_conv(x: jax.Array, kernel: jax.Array, pad: int, groups: int) -> jax.Array:
    """Stride-1 grouped conv over time: x [batch, time, channels], kernel [width, in/groups, out]."""
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(1,),
        padding=[(pad, pad)],
        dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=groups,
    )


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def grouped_conv(x: jax.Array, kernel: jax.Array, pad: int, groups: int) -> jax.Array:
    """`_grouped_conv` with a fast kernel gradient.

    XLA:CPU lowers the kernel gradient of a grouped convolution to a convolution with input
    dilation equal to the group count, which computes mostly zeros: for the 128-wide, 16-group
    positional conv it was ~40% of the whole BASE pretraining step. Here that gradient is one
    small matmul per kernel tap (a scan over taps, so nothing K times larger is materialised);
    the forward pass and the input gradient are XLA's own convolutions, unchanged.
    """
    return _grouped_conv(x, kernel, pad, groups)


def _grouped_conv_fwd(x, kernel, pad, groups):
    return _grouped_conv(x, kernel, pad, groups), (x, kernel)


def _grouped_conv_bwd(pad, groups, residuals, dy):
    x, kernel = residuals
    width, per_group, out = kernel.shape
    _, input_vjp = jax.vjp(lambda v: _grouped_conv(v, kernel, pad, groups), x)
    (dx,) = input_vjp(dy)
    batch, frames, _ = dy.shape  # [batch, frames_out, out]
    padded = jnp.pad(x, ((0, 0), (pad, pad), (0, 0)))  # [batch, time + 2 pad, channels]
    dy_groups = dy.reshape(batch * frames, groups, out // groups)

    def tap(k):  # d kernel[k]: [in/groups, out], output channel g * (out/groups) + o in group g
        window = jax.lax.dynamic_slice_in_dim(padded, k, frames, axis=1)
        window = window.reshape(batch * frames, groups, per_group)
        grad = jnp.einsum("ngi,ngo->igo", window, dy_groups, preferred_element_type=jnp.float32)
        return grad.reshape(per_group, out).astype(kernel.dtype)

    dkernel = jax.lax.map(tap, jnp.arange(width))  # [width, in/groups, out]
    return dx, dkernel


grouped_conv.defvjp(_grouped_conv_fwd, _grouped_conv_bwd)


class PositionalConvEmbedding(nn.Module):
    """Grouped conv over time with weight normalisation (fairseq `pos_conv`, dim=2), then GELU.

    The weight is `weight_g[k] * weight_v[k] / ||weight_v[k]||` for each kernel tap k (the norm
    runs over input and output channels), as `torch.nn.utils.weight_norm(conv, dim=2)`.
    """

    config: Wav2Vec2Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [batch, time, hidden]
        cfg = self.config
        width, groups, hidden = cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups, cfg.hidden_size
        # fairseq: normal(0, sqrt(4 / (kernel * hidden))) with dropout 0; weight_g starts at the
        # expected norm of a tap, so the effective weight starts like fairseq's.
        std = (4.0 / (width * hidden)) ** 0.5
        axes = (shd.CONV_WIDTH, shd.CONV_IN, shd.CONV_OUT)
        weight_v = self.param(
            "weight_v",
            nn.with_logical_partitioning(nn.initializers.normal(std), axes),
            (width, hidden // groups, hidden),
            jnp.float32,
        )
        tap_norm = std * (hidden // groups * hidden) ** 0.5
        weight_g = self.param(
            "weight_g",
            nn.with_logical_partitioning(nn.initializers.constant(tap_norm), (shd.CONV_WIDTH,)),
            (width,),
            jnp.float32,
        )
        bias = self.param("bias", nn.with_logical_partitioning(_zeros, (shd.CONV_OUT,)), (hidden,), jnp.float32)
        norm = jnp.sqrt(jnp.sum(jnp.square(weight_v), axis=(1, 2), keepdims=True))
        kernel = weight_g[:, None, None] * weight_v / norm
        dtype = cfg.compute_dtype
        y = grouped_conv(x.astype(dtype), kernel.astype(dtype), width // 2, groups)
        y = y + bias.astype(dtype)
        if width % 2 == 0:  # fairseq SamePad: an even kernel yields one extra frame
            y = y[:, :-1]
        return gelu(y)


def attention_implementation(config: Wav2Vec2Config) -> str | None:
    """The `jax.nn.dot_product_attention` implementation for `config.attention_impl`.

    "auto" picks cuDNN's fused (flash) attention on a GPU for 16-bit compute and head sizes it
    supports (multiples of 8 up to 128), else XLA (None), which is also what TPUs and CPUs get.
    """
    if config.attention_impl != "auto":
        return config.attention_impl
    on_gpu = jax.default_backend() == "gpu"
    half = config.compute_dtype in (jnp.bfloat16, jnp.float16)
    if on_gpu and half and config.head_dim % 8 == 0 and config.head_dim <= 128:
        return "cudnn"
    return None


def dot_product_attention(q, k, v, padding_mask, scale: float, implementation: str | None) -> jax.Array:
    """Attention of q, k, v [batch, time, heads, head_dim] over the unpadded keys.

    `padding_mask` [batch, time] (True = padding) is right padding, as `Wav2Vec2Model` builds it:
    cuDNN takes it as per-utterance key lengths, the other implementations as a boolean mask.
    """
    if implementation != "cudnn":
        keep = None if padding_mask is None else ~padding_mask[:, None, None, :]  # [b, 1, 1, keys]
        return jax.nn.dot_product_attention(q, k, v, mask=keep, scale=scale, implementation=implementation)
    lengths = None if padding_mask is None else jnp.sum(~padding_mask, axis=-1, dtype=jnp.int32)
    return jax.nn.dot_product_attention(q, k, v, scale=scale, key_value_seq_lengths=lengths, implementation="cudnn")


def attend(q, k, v, padding_mask, scale: float, config: Wav2Vec2Config) -> jax.Array:
    """`dot_product_attention` with the config's implementation.

    An automatic cuDNN choice that this GPU or cuDNN version turns down while tracing falls back
    to XLA with a warning; an explicit `attention_impl` is never replaced.
    """
    implementation = attention_implementation(config)
    try:
        return dot_product_attention(q, k, v, padding_mask, scale, implementation)
    except (RuntimeError, ValueError, NotImplementedError) as e:
        if implementation != "cudnn" or config.attention_impl != "auto":
            raise
        log.warning("cuDNN attention unavailable (%s); using XLA attention", e)
        return dot_product_attention(q, k, v, padding_mask, scale, None)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a key padding mask (fairseq MultiheadAttention)."""

    config: Wav2Vec2Config
    deterministic: bool

    @nn.compact
    def __call__(self, x: jax.Array, padding_mask: jax.Array | None) -> jax.Array:
        cfg = self.config
        dtype = cfg.compute_dtype
        heads, head_dim = cfg.num_attention_heads, cfg.head_dim

        def proj(name):
            return BertDense((heads, head_dim), (shd.EMBED, shd.HEADS, shd.KV), dtype=dtype, name=name)(x)

        q, k, v = proj("q_proj"), proj("k_proj"), proj("v_proj")  # [batch, time, heads, head_dim]
        q = nn.with_logical_constraint(q, (shd.ACT_BATCH, shd.ACT_TIME, shd.ACT_HEADS, None))
        k = nn.with_logical_constraint(k, (shd.ACT_BATCH, shd.ACT_TIME, shd.ACT_HEADS, None))
        v = nn.with_logical_constraint(v, (shd.ACT_BATCH, shd.ACT_TIME, shd.ACT_HEADS, None))
        scale = head_dim**-0.5
        use_dropout = not self.deterministic and cfg.attention_dropout > 0.0
        if use_dropout:
            # jax.nn.dot_product_attention has no dropout on the probabilities: do it by hand.
            q = q * jnp.asarray(scale, dtype)
            logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
            if padding_mask is not None:
                keep = ~padding_mask[:, None, None, :]  # [b, 1, 1, keys]: attend to key s of b
                logits = jnp.where(keep, logits, jnp.finfo(jnp.float32).min)
            probs = jax.nn.softmax(logits, axis=-1)
            probs = dropout(self, cfg.attention_dropout, probs, False).astype(dtype)
            out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        else:
            out = attend(q, k, v, padding_mask, scale, cfg)
        out = nn.with_logical_constraint(out, (shd.ACT_BATCH, shd.ACT_TIME, shd.ACT_HEADS, None))
        heads_to_embed = (shd.HEADS, shd.KV, shd.EMBED)
        return BertDense(cfg.hidden_size, heads_to_embed, axis=(-2, -1), dtype=dtype, name="out_proj")(out)


class FeedForward(nn.Module):
    """Linear -> activation -> dropout -> linear -> dropout."""

    config: Wav2Vec2Config
    deterministic: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        dtype = cfg.compute_dtype
        h = BertDense(cfg.intermediate_size, (shd.EMBED, shd.MLP), dtype=dtype, name="intermediate_dense")(x)
        h = activation(cfg.hidden_act)(h)
        h = nn.with_logical_constraint(h, (shd.ACT_BATCH, shd.ACT_TIME, shd.ACT_MLP))
        h = dropout(self, cfg.activation_dropout, h, self.deterministic)
        h = BertDense(cfg.hidden_size, (shd.MLP, shd.EMBED), dtype=dtype, name="output_dense")(h)
        return dropout(self, cfg.hidden_dropout, h, self.deterministic)


class EncoderLayer(nn.Module):
    """One Transformer block, post-LN or pre-LN (`do_stable_layer_norm`), with LayerDrop.

    LayerDrop keeps shapes static: the block is always computed and its output discarded when the
    layer is dropped (a `select`, which also keeps `nn.scan` and sharding simple).
    """

    config: Wav2Vec2Config
    deterministic: bool

    @nn.compact
    def __call__(self, x: jax.Array, padding_mask: jax.Array | None):
        cfg = self.config
        det = self.deterministic
        dtype = cfg.compute_dtype
        eps = cfg.layer_norm_eps
        inputs = x
        attention = SelfAttention(cfg, det, name="attention")
        feed_forward = FeedForward(cfg, det, name="feed_forward")
        layer_norm = LayerNorm(eps, dtype, name="layer_norm")
        final_layer_norm = LayerNorm(eps, dtype, name="final_layer_norm")
        if cfg.do_stable_layer_norm:
            h = attention(layer_norm(x), padding_mask)
            x = x + dropout(self, cfg.hidden_dropout, h, det)
            x = x + feed_forward(final_layer_norm(x))
        else:
            h = attention(x, padding_mask)
            x = layer_norm(x + dropout(self, cfg.hidden_dropout, h, det))
            x = final_layer_norm(x + feed_forward(x))
        if not det and cfg.layerdrop > 0.0:
            drop = jax.random.uniform(self.make_rng("dropout"), ()) < cfg.layerdrop
            x = jnp.where(drop, inputs, x)
        x = nn.with_logical_constraint(x, (shd.ACT_BATCH, shd.ACT_TIME, shd.ACT_EMBED))
        # Second output: the block's input, collected as a hidden state under nn.scan.
        return x, inputs


def _remat_policy(name: str):
    if name == "dots":
        return jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims
    return None  # "full": save nothing, recompute the whole block


class Encoder(nn.Module):
    """Positional embedding + Transformer blocks (optionally scanned and rematerialised)."""

    config: Wav2Vec2Config

    @nn.compact
    def __call__(
        self, x: jax.Array, padding_mask: jax.Array | None, deterministic: bool, output_hidden_states: bool = False
    ):
        """x: [batch, frames, hidden]; padding_mask: [batch, frames] (True = padding).

        Returns (last_hidden_state, hidden_states) where hidden_states is a tuple of
        num_hidden_layers + 1 arrays (HF semantics) or None.
        """
        cfg = self.config
        dtype = cfg.compute_dtype
        if padding_mask is not None:
            x = jnp.where(padding_mask[..., None], 0, x)
        x = x + PositionalConvEmbedding(cfg, name="pos_conv_embed")(x).astype(x.dtype)
        if not cfg.do_stable_layer_norm:
            x = LayerNorm(cfg.layer_norm_eps, dtype, name="layer_norm")(x)
        x = dropout(self, cfg.hidden_dropout, x, deterministic).astype(dtype)
        x = nn.with_logical_constraint(x, (shd.ACT_BATCH, shd.ACT_TIME, shd.ACT_EMBED))

        layer_cls = EncoderLayer
        if cfg.remat != "none":
            layer_cls = nn.remat(layer_cls, policy=_remat_policy(cfg.remat), prevent_cse=not cfg.scan_layers)
        if cfg.scan_layers:
            scanned = nn.scan(
                layer_cls,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=nn.broadcast,
                length=cfg.num_hidden_layers,
                metadata_params={nn.PARTITION_NAME: shd.LAYERS},
            )
            x, layer_inputs = scanned(cfg, deterministic, name=SCANNED_LAYERS)(x, padding_mask)
            layer_inputs = tuple(layer_inputs[i] for i in range(cfg.num_hidden_layers)) if output_hidden_states else ()
        else:
            layer_inputs = []
            for i in range(cfg.num_hidden_layers):
                x, inputs = layer_cls(cfg, deterministic, name=layer_name(i))(x, padding_mask)
                layer_inputs.append(inputs)
            layer_inputs = tuple(layer_inputs)
        # transformers 5 (pinned) records each block's output as a hidden state, so for pre-LN the
        # last one is the final block's output *before* the closing LayerNorm (transformers 4
        # returned it after); fairseq's per-layer results agree with the former.
        hidden_states = (layer_inputs + (x,)) if output_hidden_states else None
        if cfg.do_stable_layer_norm:
            x = LayerNorm(cfg.layer_norm_eps, dtype, name="layer_norm")(x)
        return x, hidden_states


def restack_layers(params: Any, config: Wav2Vec2Config, scan_layers: bool) -> Any:
    """Converts every `encoder/` in a parameter tree between per-block subtrees (`layer_name(i)`)
    and one stacked `SCANNED_LAYERS` subtree (leading axis = block), as `scan_layers` asks.

    Args:
      params: host parameter tree (nested dicts of arrays) of any model holding an `Encoder`.
      config: the model config (its `num_hidden_layers` blocks).
      scan_layers: the target layout.
    Returns:
      A new tree (numpy leaves where restacked); already-matching encoders are unchanged.
    """

    def fix(enc: Mapping) -> dict:
        enc = dict(enc)
        n = config.num_hidden_layers
        if scan_layers and layer_name(0) in enc:
            enc[SCANNED_LAYERS] = _tree_stack([enc.pop(layer_name(i)) for i in range(n)])
        elif not scan_layers and SCANNED_LAYERS in enc:
            stacked = enc.pop(SCANNED_LAYERS)
            for i in range(n):
                enc[layer_name(i)] = _tree_index(stacked, i)
        return enc

    def walk(tree):
        if not isinstance(tree, Mapping):
            return tree
        return {k: (fix(walk(v)) if k == "encoder" else walk(v)) for k, v in tree.items()}

    return walk(params)


def _tree_stack(trees: list) -> Any:
    if isinstance(trees[0], Mapping):
        return {k: _tree_stack([t[k] for t in trees]) for k in trees[0]}
    return np.stack([np.asarray(t) for t in trees], axis=0)


def _tree_index(tree: Any, i: int) -> Any:
    if isinstance(tree, Mapping):
        return {k: _tree_index(v, i) for k, v in tree.items()}
    return np.asarray(tree)[i]
