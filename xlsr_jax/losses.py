"""Losses: contrastive, diversity, feature penalty (pretraining), CTC and label-smoothed
cross-entropy (fine-tuning).

Pretraining follows fairseq's `Wav2vecCriterion`: the contrastive cross-entropy is summed over
masked frames, the extra losses are multiplied by that count (`sample_size`), and the optimiser
sees the total divided by `sample_size`. We return that normalised value directly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from xlsr_jax.models.config import Wav2Vec2Config
from xlsr_jax.models.wav2vec2 import PretrainingOutput


def contrastive_loss(logits: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Cross-entropy with the positive at index 0, summed over weighted frames.

    Args:
      logits: float32 [batch, frames, 1 + K].
      weights: [batch, frames] (1 for masked frames).
    Returns:
      (loss_sum, num_correct, count): `num_correct` counts frames whose positive has the largest
      logit, excluding the degenerate case where all logits are equal (fairseq's accuracy).
    """
    weights = weights.astype(jnp.float32)
    nll = -jax.nn.log_softmax(logits, axis=-1)[..., 0]
    loss_sum = jnp.sum(nll * weights)
    best = jnp.argmax(logits, axis=-1) == 0
    worst = jnp.argmin(logits, axis=-1) == 0
    correct = jnp.sum((best & ~worst) * weights)
    return loss_sum, correct, jnp.sum(weights)


def diversity_loss(prob_perplexity: jax.Array, num_codevectors: int) -> jax.Array:
    """(G*V - perplexity) / (G*V): 0 when every codebook entry is used equally often."""
    return (num_codevectors - prob_perplexity) / num_codevectors


def pretraining_loss(output: PretrainingOutput, config: Wav2Vec2Config) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The wav2vec 2.0 objective, normalised per masked frame.

    Returns:
      (loss, metrics): loss = contrastive / n + diversity_loss_weight * diversity +
      feature_penalty_weight * feature_penalty, n the number of masked frames; metrics holds each
      part, the contrastive accuracy, both perplexities and n, all float32 scalars.
    """
    loss_sum, correct, count = contrastive_loss(output.logits, output.mask_time_indices)
    count = jnp.maximum(count, 1.0)
    contrastive = loss_sum / count
    diversity = diversity_loss(output.prob_perplexity, output.num_codevectors)
    penalty = output.feature_penalty
    loss = contrastive + config.diversity_loss_weight * diversity + config.feature_penalty_weight * penalty
    metrics = {
        "loss": loss,
        "contrastive_loss": contrastive,
        "diversity_loss": diversity,
        "feature_penalty": penalty,
        "accuracy": correct / count,
        "code_perplexity": output.code_perplexity,
        "prob_perplexity": output.prob_perplexity,
        "num_masked": count,
    }
    return loss, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


def ctc_loss(
    logits: jax.Array,
    frame_padding: jax.Array,
    labels: jax.Array,
    label_padding: jax.Array,
    blank_id: int = 0,
    zero_infinity: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """CTC loss per utterance (optax), and the number of label tokens.

    Args:
      logits: float32 [batch, frames, vocab].
      frame_padding: bool [batch, frames], True at padding.
      labels: int [batch, max_labels].
      label_padding: bool [batch, max_labels], True at padding.
      blank_id: the CTC blank (HF's pad token, id 0 here).
      zero_infinity: an utterance too short for its transcript gets loss 0 (and no gradient)
        instead of inf, as `torch.nn.CTCLoss(zero_infinity=True)`.
    Returns:
      (loss [batch], label_lengths [batch]).
    """
    per_seq = optax.ctc_loss(
        logits.astype(jnp.float32),
        frame_padding.astype(jnp.float32),
        labels,
        label_padding.astype(jnp.float32),
        blank_id=blank_id,
    )
    label_lengths = jnp.sum(~label_padding, axis=-1)
    if zero_infinity:
        # optax reports an impossible alignment as a large finite number (log-epsilon), so decide
        # feasibility directly: CTC needs one frame per label plus a blank between repeats.
        valid = ~label_padding
        repeats = jnp.sum((labels[:, 1:] == labels[:, :-1]) & valid[:, 1:] & valid[:, :-1], axis=-1)
        frames = jnp.sum(~frame_padding, axis=-1)
        feasible = frames >= label_lengths + repeats
        per_seq = jnp.where(feasible & jnp.isfinite(per_seq), per_seq, 0.0)
    return per_seq, label_lengths


def label_smoothed_cross_entropy(
    logits: jax.Array, labels: jax.Array, pad_id: int, epsilon: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Token-level cross-entropy with label smoothing, padding ignored (speech translation).

    fairseq's `label_smoothed_nll_loss` (criterions/label_smoothed_cross_entropy.py), the loss of
    the XLS-R translation fine-tuning: (1 - eps - eps_i) * nll + eps_i * sum over the vocabulary of
    -log p, with eps_i = eps / (vocab - 1), so that the target keeps 1 - eps of the mass.

    Args:
      logits: float [batch, t, vocab] (teacher-forced).
      labels: int [batch, t], `pad_id` (or -100) where there is no target.
      pad_id: the padding label.
      epsilon: smoothing mass (0 = plain cross-entropy).
    Returns:
      (loss_sum, nll_sum, num_tokens): sums over non-padding tokens (float32), and their count.
    """
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    valid = (labels != pad_id) & (labels >= 0)
    safe = jnp.where(valid, labels, 0)
    nll = -jnp.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]  # [batch, t]
    smooth = -jnp.sum(log_probs, axis=-1)
    eps_i = epsilon / (logits.shape[-1] - 1)
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    weights = valid.astype(jnp.float32)
    return jnp.sum(loss * weights), jnp.sum(nll * weights), jnp.sum(weights)
