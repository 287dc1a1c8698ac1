"""The mBART Transformer decoder with cross-attention and a key/value cache.

Semantics follow transformers' `MBartForCausalLM` (modeling_mbart.py), the decoder of the XLS-R
speech-translation models: token embeddings scaled by sqrt(d_model) when `scale_embedding`,
learned positions stored with an offset of 2 (position p reads row p + 2), a LayerNorm on the
embeddings, pre-LN blocks (self-attention, cross-attention over the encoder, feed-forward), a
final LayerNorm, and an output projection tied to the token embeddings by default.

Two ways to run it, same parameters:
  * teacher forcing: `Decoder.__call__` over a whole target prefix with a causal mask;
  * incremental: `Decoder.init_cache` once per batch (the cross-attention keys/values of every
    layer are computed here, once), then `Decoder.decode_step` per token, which writes its key and
    value into a fixed-size cache at `cache.index`. Shapes never change, so a generation loop
    compiles once per (batch, max length) and each step costs the same whatever its position.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from xlsr_jax import sharding as shd
from xlsr_jax.models.layers import LayerNorm, activation
from xlsr_jax.models.transformer import BertDense

# torch.nn.LayerNorm's default: MBart builds every LayerNorm without an eps argument.
LAYER_NORM_EPS = 1e-5
# MBartLearnedPositionalEmbedding: "if padding_idx is specified then offset the embedding ids by 2".
POSITION_OFFSET = 2


@dataclasses.dataclass(frozen=True)
class MBartDecoderConfig:
    """The decoder's architecture, with transformers' `MBartConfig` field names.

    Defaults are mBART-50's decoder (facebook/mbart-large-50, the decoder of
    facebook/wav2vec2-xls-r-*-21-to-en): 12 pre-LN blocks of width 1024, 16 heads, 4096-wide
    feed-forward, 250054 sentencepiece tokens, scaled embeddings, 1024 positions.
    """

    vocab_size: int = 250054
    d_model: int = 1024
    decoder_layers: int = 12
    decoder_attention_heads: int = 16
    decoder_ffn_dim: int = 4096
    activation_function: str = "gelu"
    max_position_embeddings: int = 1024  # longest target (in tokens) the position table covers
    scale_embedding: bool = True  # multiply token embeddings by sqrt(d_model)
    tie_word_embeddings: bool = True  # output projection = token embedding matrix (transposed)
    dropout: float = 0.1  # residual branches and embeddings
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    decoder_layerdrop: float = 0.0
    init_std: float = 0.02  # normal init of linear layers and embeddings (MBartConfig.init_std)
    pad_token_id: int = 1  # embedding row of padding (fairseq dictionary: <s>=0 <pad>=1 </s>=2)
    dtype: str = "float32"  # ours: compute dtype; parameters stay float32

    def __post_init__(self):
        if self.d_model % self.decoder_attention_heads:
            raise ValueError("d_model must be divisible by decoder_attention_heads")
        activation(self.activation_function)  # raises for an unknown activation

    @property
    def head_dim(self) -> int:
        return self.d_model // self.decoder_attention_heads

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], strict: bool = True) -> MBartDecoderConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown and strict:
            raise ValueError(f"unknown MBartDecoderConfig fields: {unknown}")
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def tiny_decoder_config(**overrides) -> MBartDecoderConfig:
    """A decoder small enough for tests and the CPU demo, with mBART's structure."""
    values = dict(
        vocab_size=96,
        d_model=64,
        decoder_layers=2,
        decoder_attention_heads=4,
        decoder_ffn_dim=128,
        max_position_embeddings=64,
    )
    values.update(overrides)
    return MBartDecoderConfig(**values)


class DecoderCache(NamedTuple):
    """The decoder's state between generation steps (a pytree; every array has batch first).

    self_key/self_value: one [batch, max_length, heads, head_dim] array per layer, filled up to
    `index`; cross_key/cross_value: one [batch, source_frames, heads, head_dim] per layer, from
    the encoder output; cross_padding: bool [batch, source_frames], True at padding; index: int32
    scalar, the position the next token takes.
    """

    self_key: tuple[jax.Array, ...]
    self_value: tuple[jax.Array, ...]
    cross_key: tuple[jax.Array, ...]
    cross_value: tuple[jax.Array, ...]
    cross_padding: jax.Array
    index: jax.Array


def _dropout(layer: nn.Dropout, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or layer.rate <= 0.0:
        return x
    return layer(x, deterministic=False)


class DecoderAttention(nn.Module):
    """Multi-head attention whose keys/values are computed separately (`project_kv`), so that a
    cache can hold them; used for both self- and cross-attention (HF `MBartAttention`)."""

    config: MBartDecoderConfig

    def setup(self):
        c = self.config
        dtype, std = c.compute_dtype, nn.initializers.normal(c.init_std)
        heads = (c.decoder_attention_heads, c.head_dim)
        qkv_axes = (shd.EMBED, shd.HEADS, shd.KV)
        self.q_proj = BertDense(heads, qkv_axes, dtype=dtype, kernel_init=std)
        self.k_proj = BertDense(heads, qkv_axes, dtype=dtype, kernel_init=std)
        self.v_proj = BertDense(heads, qkv_axes, dtype=dtype, kernel_init=std)
        self.out_proj = BertDense(
            c.d_model, (shd.HEADS, shd.KV, shd.EMBED), axis=(-2, -1), dtype=dtype, kernel_init=std
        )
        self.attn_dropout = nn.Dropout(c.attention_dropout)

    def project_kv(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [batch, time, d_model] -> keys, values [batch, time, heads, head_dim]."""
        return self.k_proj(x), self.v_proj(x)

    def __call__(self, x: jax.Array, key: jax.Array, value: jax.Array, keep: jax.Array, deterministic: bool):
        """Queries from x [batch, q, d_model] attend to key/value [batch, k, heads, head_dim] where
        `keep` (bool, broadcastable to [batch, heads, q, k]) is True. Returns [batch, q, d_model]."""
        c = self.config
        q = self.q_proj(x) * jnp.asarray(c.head_dim**-0.5, c.compute_dtype)  # [batch, q, heads, head_dim]
        q = nn.with_logical_constraint(q, (shd.ACT_BATCH, shd.ACT_TIME, shd.ACT_HEADS, None))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, key.astype(q.dtype)).astype(jnp.float32)
        logits = jnp.where(keep, logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1)
        probs = _dropout(self.attn_dropout, probs, deterministic).astype(c.compute_dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, value.astype(probs.dtype))
        return self.out_proj(out)


class DecoderLayer(nn.Module):
    """Pre-LN block: self-attention, cross-attention over the encoder, feed-forward (HF
    `MBartDecoderLayer`), with LayerDrop as a select so that shapes stay static."""

    config: MBartDecoderConfig

    def setup(self):
        c = self.config
        dtype, std = c.compute_dtype, nn.initializers.normal(c.init_std)
        self.self_attn = DecoderAttention(c)
        self.self_attn_layer_norm = LayerNorm(LAYER_NORM_EPS, dtype)
        self.encoder_attn = DecoderAttention(c)
        self.encoder_attn_layer_norm = LayerNorm(LAYER_NORM_EPS, dtype)
        self.fc1 = BertDense(c.decoder_ffn_dim, (shd.EMBED, shd.MLP), dtype=dtype, kernel_init=std)
        self.fc2 = BertDense(c.d_model, (shd.MLP, shd.EMBED), dtype=dtype, kernel_init=std)
        self.final_layer_norm = LayerNorm(LAYER_NORM_EPS, dtype)
        self.dropout = nn.Dropout(c.dropout)
        self.activation_dropout = nn.Dropout(c.activation_dropout)

    def cross_kv(self, encoder_hidden: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The cross-attention keys/values of the encoder output [batch, frames, d_model]."""
        return self.encoder_attn.project_kv(encoder_hidden)

    def __call__(
        self,
        x: jax.Array,
        self_keep: jax.Array,
        cross_key: jax.Array,
        cross_value: jax.Array,
        cross_keep: jax.Array,
        deterministic: bool,
        cache: tuple[jax.Array, jax.Array] | None = None,
        cache_index: jax.Array | None = None,
    ):
        """x [batch, t, d_model] -> (x', (keys, values) of the self-attention: the new cache when
        `cache` is given, else this call's own keys/values)."""
        c = self.config
        inputs = x
        h = self.self_attn_layer_norm(x)
        key, value = self.self_attn.project_kv(h)  # [batch, t, heads, head_dim]
        if cache is not None:
            key = jax.lax.dynamic_update_slice_in_dim(cache[0], key.astype(cache[0].dtype), cache_index, axis=1)
            value = jax.lax.dynamic_update_slice_in_dim(cache[1], value.astype(cache[1].dtype), cache_index, axis=1)
        h = self.self_attn(h, key, value, self_keep, deterministic)
        x = x + _dropout(self.dropout, h, deterministic)
        h = self.encoder_attn(self.encoder_attn_layer_norm(x), cross_key, cross_value, cross_keep, deterministic)
        x = x + _dropout(self.dropout, h, deterministic)
        h = self.fc1(self.final_layer_norm(x))
        h = activation(c.activation_function)(h)
        h = nn.with_logical_constraint(h, (shd.ACT_BATCH, shd.ACT_TIME, shd.ACT_MLP))
        h = self.fc2(_dropout(self.activation_dropout, h, deterministic))
        x = x + _dropout(self.dropout, h, deterministic)
        if not deterministic and c.decoder_layerdrop > 0.0:
            drop = jax.random.uniform(self.make_rng("dropout"), ()) < c.decoder_layerdrop
            x = jnp.where(drop, inputs, x)
        x = nn.with_logical_constraint(x, (shd.ACT_BATCH, shd.ACT_TIME, shd.ACT_EMBED))
        return x, (key, value)


class Decoder(nn.Module):
    """mBART's decoder and output projection (HF `MBartForCausalLM`: `model.decoder` + `lm_head`)."""

    config: MBartDecoderConfig

    def setup(self):
        c = self.config
        std = nn.initializers.normal(c.init_std)
        self.embed_tokens = nn.Embed(
            c.vocab_size,
            c.d_model,
            dtype=c.compute_dtype,
            embedding_init=nn.with_logical_partitioning(std, (shd.VOCAB, shd.EMBED)),
        )
        # Positions are few (max_position_embeddings + 2) and always whole: no axis name of their own.
        self.embed_positions = nn.Embed(
            c.max_position_embeddings + POSITION_OFFSET,
            c.d_model,
            dtype=c.compute_dtype,
            embedding_init=nn.with_logical_partitioning(std, (None, shd.EMBED)),
        )
        self.layernorm_embedding = LayerNorm(LAYER_NORM_EPS, c.compute_dtype)
        self.layers = [DecoderLayer(c) for i in range(c.decoder_layers)]
        self.layer_norm = LayerNorm(LAYER_NORM_EPS, c.compute_dtype)
        self.dropout = nn.Dropout(c.dropout)
        if not c.tie_word_embeddings:
            self.lm_head = BertDense(
                c.vocab_size, (shd.EMBED, shd.VOCAB), use_bias=False, dtype=c.compute_dtype, kernel_init=std
            )

    def _embed(self, input_ids: jax.Array, positions: jax.Array, deterministic: bool) -> jax.Array:
        c = self.config
        x = self.embed_tokens(input_ids)  # [batch, t, d_model]
        if c.scale_embedding:
            x = x * jnp.asarray(c.d_model**0.5, x.dtype)
        x = x + self.embed_positions(positions + POSITION_OFFSET)
        x = self.layernorm_embedding(x)
        return _dropout(self.dropout, x, deterministic)

    def _logits(self, x: jax.Array) -> jax.Array:
        x = self.layer_norm(x)
        if self.config.tie_word_embeddings:
            logits = self.embed_tokens.attend(x)
        else:
            logits = self.lm_head(x)
        return logits.astype(jnp.float32)  # [batch, t, vocab]

    def __call__(
        self,
        input_ids: jax.Array,
        encoder_hidden: jax.Array,
        encoder_padding_mask: jax.Array | None,
        deterministic: bool = True,
    ) -> jax.Array:
        """Teacher forcing: logits float32 [batch, t, vocab] for int input_ids [batch, t].

        encoder_hidden: [batch, frames, d_model]; encoder_padding_mask: bool [batch, frames],
        True at padding (None = none). Target padding needs no mask: it comes after the real
        tokens, which the causal mask already hides it from.
        """
        t = input_ids.shape[1]
        x = self._embed(input_ids, jnp.arange(t)[None, :], deterministic)
        self_keep = jnp.tril(jnp.ones((t, t), bool))[None, None]  # [1, 1, q, k]
        cross_keep = _cross_keep(encoder_padding_mask, encoder_hidden.shape[:2])
        for layer in self.layers:
            key, value = layer.cross_kv(encoder_hidden)
            x, _ = layer(x, self_keep, key, value, cross_keep, deterministic)
        return self._logits(x)

    def init_cache(
        self, encoder_hidden: jax.Array, encoder_padding_mask: jax.Array | None, max_length: int
    ) -> DecoderCache:
        """An empty cache for `max_length` target tokens, with every layer's cross-attention
        keys/values computed from encoder_hidden [batch, frames, d_model] (once per batch)."""
        c = self.config
        batch, frames = encoder_hidden.shape[:2]
        shape = (batch, max_length, c.decoder_attention_heads, c.head_dim)
        cross = [layer.cross_kv(encoder_hidden) for layer in self.layers]
        padding = jnp.zeros((batch, frames), bool) if encoder_padding_mask is None else encoder_padding_mask
        return DecoderCache(
            self_key=tuple(jnp.zeros(shape, c.compute_dtype) for _ in self.layers),
            self_value=tuple(jnp.zeros(shape, c.compute_dtype) for _ in self.layers),
            cross_key=tuple(k for k, _ in cross),
            cross_value=tuple(v for _, v in cross),
            cross_padding=padding,
            index=jnp.zeros((), jnp.int32),
        )

    def decode_step(self, input_ids: jax.Array, cache: DecoderCache) -> tuple[jax.Array, DecoderCache]:
        """Next-token logits float32 [batch, t, vocab] for input_ids [batch, t] at positions
        cache.index ... cache.index + t - 1, and the cache with their keys/values written in."""
        t = input_ids.shape[1]
        max_length = cache.self_key[0].shape[1]
        positions = cache.index + jnp.arange(t)  # [t]
        x = self._embed(input_ids, positions[None, :], True)
        self_keep = (jnp.arange(max_length)[None, :] <= positions[:, None])[None, None]  # [1, 1, t, max]
        cross_keep = _cross_keep(cache.cross_padding, cache.cross_padding.shape)
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            x, (key, value) = layer(
                x,
                self_keep,
                cache.cross_key[i],
                cache.cross_value[i],
                cross_keep,
                True,
                cache=(cache.self_key[i], cache.self_value[i]),
                cache_index=cache.index,
            )
            keys.append(key)
            values.append(value)
        new_cache = cache._replace(self_key=tuple(keys), self_value=tuple(values), index=cache.index + t)
        return self._logits(x), new_cache


def _cross_keep(padding_mask: jax.Array | None, shape: tuple[int, int]) -> jax.Array:
    """[batch, 1, 1, frames] True at the encoder frames a query may attend to."""
    if padding_mask is None:
        return jnp.ones((shape[0], 1, 1, shape[1]), bool)
    return ~padding_mask[:, None, None, :]
