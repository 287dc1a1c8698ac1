"""Span masks and negative sampling in pure jnp with static shapes (usable inside `jit`).

`compute_span_mask` reproduces fairseq's `compute_mask_indices` ("static" spans): per utterance
of valid length `sz`, `max(min_masks, int(mask_prob * sz / mask_length + U[0,1)))` span starts are
drawn without replacement from `[0, sz - mask_length)` and each covers `mask_length` frames
(clipped to the utterance); with `require_same_masks` every utterance then keeps a random subset
of its masked frames so all have the batch's minimum count. Only the *values* depend on the data;
every array has a static shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _ranks(scores: jax.Array) -> jax.Array:
    """Rank of each entry along the last axis (0 = smallest); ties broken by position."""
    return jnp.argsort(jnp.argsort(scores, axis=-1, stable=True), axis=-1, stable=True)


def compute_span_mask(
    rng: jax.Array,
    shape: tuple[int, int],
    lengths: jax.Array | None,
    mask_prob: float,
    mask_length: int,
    min_masks: int = 0,
    require_same_masks: bool = True,
) -> jax.Array:
    """Random span mask as fairseq's `compute_mask_indices(..., mask_type="static")`.

    Args:
      rng: PRNG key.
      shape: (batch, frames), static.
      lengths: int [batch] valid frames per row (None: all frames valid).
      mask_prob: expected share of frames that start-points x mask_length covers.
      mask_length: span length.
      min_masks: minimum number of spans per row.
      require_same_masks: give every row the same number of masked frames (the batch minimum).
    Returns:
      bool [batch, frames], True where masked; never True at padded frames.
    """
    batch, frames = shape
    if lengths is None:
        lengths = jnp.full((batch,), frames, jnp.int32)
    lengths = lengths.astype(jnp.int32)
    if mask_prob <= 0.0 and min_masks <= 0:
        return jnp.zeros(shape, bool)
    start_rng, count_rng, keep_rng = jax.random.split(rng, 3)

    # Number of spans per row: int(mask_prob * sz / mask_length + rand), at least min_masks.
    num_spans = jnp.floor(mask_prob * lengths / mask_length + jax.random.uniform(count_rng, (batch,)))
    num_spans = jnp.maximum(num_spans.astype(jnp.int32), min_masks)
    # fairseq shrinks the start range when spans would not fit: sz - min_len <= num_spans.
    span = jnp.full((batch,), mask_length, jnp.int32)
    span = jnp.where(lengths - span <= num_spans, lengths - num_spans - 1, span)
    num_starts = jnp.maximum(lengths - span, 0)  # starts are drawn from [0, num_starts)
    num_spans = jnp.minimum(num_spans, num_starts)

    # Choose num_spans distinct starts uniformly: the num_spans smallest of iid uniform scores
    # over the allowed positions.
    positions = jnp.arange(frames)[None, :]
    scores = jax.random.uniform(start_rng, (batch, frames))
    scores = jnp.where(positions < num_starts[:, None], scores, 2.0)
    is_start = _ranks(scores) < num_spans[:, None]

    # Frame t is masked when a start lies in (t - mask_length, t]: a windowed count of starts.
    counts = jnp.cumsum(is_start.astype(jnp.int32), axis=1)
    shifted = jnp.pad(counts, ((0, 0), (mask_length, 0)))[:, :frames]
    mask = (counts - shifted > 0) & (positions < lengths[:, None])

    if require_same_masks:
        per_row = jnp.sum(mask, axis=1)
        target = jnp.min(per_row)
        keep_scores = jnp.where(mask, jax.random.uniform(keep_rng, (batch, frames)), 2.0)
        mask = mask & (_ranks(keep_scores) < target)
    return mask


def compute_channel_mask(
    rng: jax.Array, batch: int, channels: int, mask_prob: float, mask_length: int, min_masks: int = 0
) -> jax.Array:
    """Channel (feature) mask for fine-tuning, fairseq's `mask_channel_*`: bool [batch, channels]."""
    return compute_span_mask(rng, (batch, channels), None, mask_prob, mask_length, min_masks, require_same_masks=False)


def sample_negatives(rng: jax.Array, mask: jax.Array, num_negatives: int) -> jax.Array:
    """Distractor time indices for every frame, drawn from the same row's masked frames.

    As fairseq's `sample_negatives` (cross_sample_negatives=0): for a masked frame of rank r
    among the row's n masked frames, each distractor is uniform over the other n - 1 masked
    frames, so never the positive itself and never padding.

    Args:
      rng: PRNG key.
      mask: bool [batch, frames], the time mask.
      num_negatives: K.
    Returns:
      int32 [batch, frames, K] frame indices. Rows for unmasked frames are meaningless (the loss
      ignores them). If a row has a single masked frame, its only "distractor" is itself, which
      the contrastive loss discards as equal to the positive.
    """
    batch, frames = mask.shape
    # Masked frames first, in time order: masked_positions[b, :n_b] are row b's masked frames.
    masked_positions = jnp.argsort(~mask, axis=1, stable=True).astype(jnp.int32)
    count = jnp.sum(mask, axis=1).astype(jnp.int32)  # n_b
    rank = jnp.cumsum(mask, axis=1).astype(jnp.int32) - 1  # rank of each masked frame in its row
    high = jnp.maximum(count - 1, 1)[:, None, None]
    draws = jax.random.randint(rng, (batch, frames, num_negatives), 0, jnp.iinfo(jnp.int32).max)
    draws = draws % high  # uniform enough: the range 2^31 is vastly larger than n_b
    draws = jnp.where((draws >= rank[:, :, None]) & (count[:, None, None] > 1), draws + 1, draws)
    return jax.vmap(lambda positions, idx: positions[idx])(masked_positions, draws)
