"""Gumbel-softmax product quantizer (fairseq `GumbelVectorQuantizer`, HF
`Wav2Vec2GumbelVectorQuantizer`).

G groups of V codebook entries; each frame picks one entry per group and the concatenation is
the quantized vector. Training uses the straight-through HARD Gumbel-softmax: the forward pass is
exactly one-hot (so targets are real codebook vectors), the gradient flows through the soft
sample. A soft-only sampler lets the model blend entries and is a known cause of codebook collapse.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from xlsr_jax import sharding as shd
from xlsr_jax.models.config import Wav2Vec2Config
from xlsr_jax.models.layers import Dense


class QuantizerOutput(NamedTuple):
    quantized: jax.Array  # [batch, frames, codevector_dim]
    codes: jax.Array  # int32 [batch, frames, groups]: chosen entry per group
    code_perplexity: jax.Array  # scalar: perplexity of the hard choices, summed over groups
    prob_perplexity: jax.Array  # scalar: perplexity of the mean softmax, summed over groups


def hard_gumbel_softmax(rng: jax.Array, logits: jax.Array, temperature: jax.Array) -> jax.Array:
    """Straight-through Gumbel-softmax over the last axis: one-hot forward, soft gradient."""
    gumbels = -jnp.log(jax.random.exponential(rng, logits.shape, jnp.float32))
    soft = jax.nn.softmax((logits + gumbels) / temperature, axis=-1)
    hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), logits.shape[-1], dtype=soft.dtype)
    return hard - jax.lax.stop_gradient(soft) + soft


def perplexity(probs: jax.Array, weights: jax.Array) -> jax.Array:
    """exp(entropy) of the weighted mean distribution, summed over groups.

    probs: [N, groups, V]; weights: [N] (1 for frames that count). fairseq adds 1e-7 inside the
    log; so do we.
    """
    weights = weights.astype(jnp.float32)
    mean = jnp.einsum("ngv,n->gv", probs, weights) / jnp.maximum(jnp.sum(weights), 1.0)
    return jnp.sum(jnp.exp(-jnp.sum(mean * jnp.log(mean + 1e-7), axis=-1)))


class GumbelVectorQuantizer(nn.Module):
    """Product quantizer; parameters `codevectors` [G*V, D/G] and `weight_proj` (dim -> G*V)."""

    config: Wav2Vec2Config

    @nn.compact
    def __call__(
        self, x: jax.Array, weights: jax.Array, temperature: jax.Array, deterministic: bool
    ) -> QuantizerOutput:
        """x: [batch, frames, dim]; weights: [batch, frames], frames counted in the perplexities.

        In training (deterministic=False) entries are drawn with hard Gumbel noise from the
        'gumbel' RNG stream; in eval they are the argmax.
        """
        cfg = self.config
        groups, entries = cfg.num_codevector_groups, cfg.num_codevectors_per_group
        batch, frames, _ = x.shape
        codevectors = self.param(
            "codevectors",
            nn.with_logical_partitioning(nn.initializers.uniform(1.0), (shd.CODEVECTORS, shd.CODEVECTOR_DIM)),
            (groups * entries, cfg.codevector_dim // groups),
            jnp.float32,
        )
        logits = Dense(
            groups * entries,
            (shd.CONV_OUT, shd.CODEVECTORS),
            dtype=jnp.float32,
            kernel_init=nn.initializers.normal(1.0),
            bias_init=nn.initializers.zeros,
            name="weight_proj",
        )(x.astype(jnp.float32))
        logits = logits.reshape(batch * frames, groups, entries)  # float32 throughout, as fairseq

        codes = jnp.argmax(logits, axis=-1)  # [batch*frames, groups]
        hard = jax.nn.one_hot(codes, entries, dtype=jnp.float32)
        flat_weights = weights.reshape(-1)
        code_ppl = perplexity(hard, flat_weights)
        prob_ppl = perplexity(jax.nn.softmax(logits, axis=-1), flat_weights)

        if deterministic:
            onehot = hard
        else:
            onehot = hard_gumbel_softmax(self.make_rng("gumbel"), logits, temperature)
            codes = jnp.argmax(onehot, axis=-1)
        # Per group, one-hot @ that group's entries: [N, G, V] x [G, V, D/G] -> [N, G, D/G].
        book = codevectors.reshape(groups, entries, -1)
        quantized = jnp.einsum("ngv,gvd->ngd", onehot, book).reshape(batch, frames, -1)
        codes = codes.reshape(batch, frames, groups).astype(jnp.int32)
        return QuantizerOutput(quantized, codes, code_ppl, prob_ppl)
