"""Contrastive, diversity and CTC losses against independent NumPy computations."""

import jax
import jax.numpy as jnp
import numpy as np

from xlsr_jax import losses, masking
from xlsr_jax.models import PretrainingOutput, contrastive_logits, get_preset
from xlsr_jax.models.quantizer import perplexity


def numpy_contrastive(x, y, codes, neg, mask, temperature):
    """fairseq's compute_preds + cross-entropy, gathering distractor vectors frame by frame."""
    total, correct, count = 0.0, 0, 0
    for b in range(x.shape[0]):
        for t in np.flatnonzero(mask[b]):
            cands = np.concatenate([y[b, t][None], y[b, neg[b, t]]], axis=0)  # [1+K, dim]
            cos = cands @ x[b, t] / (np.linalg.norm(cands, axis=1) * np.linalg.norm(x[b, t]))
            logits = cos / temperature
            same = (codes[b, neg[b, t]] == codes[b, t]).all(-1)
            logits[1:][same] = -np.inf
            m = logits.max()
            total += -(logits[0] - m - np.log(np.exp(logits - m).sum()))
            correct += int(np.argmax(logits) == 0 and np.argmin(logits) != 0)
            count += 1
    return total, correct, count


def test_contrastive_loss_matches_numpy_reference():
    rng = np.random.default_rng(0)
    batch, frames, dim, k = 3, 50, 16, 10
    x = rng.normal(size=(batch, frames, dim)).astype(np.float32)
    y = rng.normal(size=(batch, frames, dim)).astype(np.float32)
    codes = rng.integers(0, 4, size=(batch, frames, 2)).astype(np.int32)  # few codes: many collisions
    mask = masking.compute_span_mask(jax.random.key(0), (batch, frames), jnp.array([50, 40, 30]), 0.5, 5, 2)
    neg = masking.sample_negatives(jax.random.key(1), mask, k)
    logits = contrastive_logits(jnp.asarray(x), jnp.asarray(y), neg, jnp.asarray(codes), 0.1)
    loss_sum, correct, count = losses.contrastive_loss(logits, mask)
    ref_sum, ref_correct, ref_count = numpy_contrastive(x, y, codes, np.asarray(neg), np.asarray(mask), 0.1)
    assert int(count) == ref_count
    np.testing.assert_allclose(float(loss_sum), ref_sum, rtol=1e-5)
    assert int(correct) == ref_correct
    # Collisions occurred, so the -inf path was exercised.
    assert np.isinf(np.asarray(logits)).any()


def test_perplexity_and_diversity_match_numpy():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(8), size=(30, 2)).astype(np.float32)  # [N, groups, V]
    weights = (rng.random(30) > 0.3).astype(np.float32)
    mean = (probs * weights[:, None, None]).sum(0) / weights.sum()
    ref = np.exp(-(mean * np.log(mean + 1e-7)).sum(-1)).sum()
    ppl = perplexity(jnp.asarray(probs), jnp.asarray(weights))
    np.testing.assert_allclose(float(ppl), ref, rtol=1e-5)
    np.testing.assert_allclose(float(losses.diversity_loss(ppl, 16)), (16 - ref) / 16, rtol=1e-5)


def test_pretraining_loss_combines_parts_with_preset_weights():
    cfg = get_preset("base")  # diversity 0.1, feature penalty 10
    logits = jnp.zeros((1, 4, 3)).at[0, :, 0].set(1.0)
    mask = jnp.array([[True, True, False, False]])
    out = PretrainingOutput(
        logits, mask, jnp.zeros((1, 4, 2), jnp.int32), jnp.float32(100.0), jnp.float32(320.0), jnp.float32(0.5), 640
    )
    loss, metrics = losses.pretraining_loss(out, cfg)
    contrastive = -np.log(np.e / (np.e + 2))
    np.testing.assert_allclose(float(metrics["contrastive_loss"]), contrastive, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["diversity_loss"]), 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(loss), contrastive + 0.1 * 0.5 + 10 * 0.5, rtol=1e-6)
    assert float(metrics["accuracy"]) == 1.0 and float(metrics["num_masked"]) == 2.0


def test_ctc_loss_matches_brute_force_path_sum():
    # Two frames, vocabulary {blank, a}: label "a" is emitted by paths (a,a), (a,-), (-,a).
    logits = np.log(np.array([[[0.6, 0.4], [0.3, 0.7]]], np.float32))
    p = np.exp(logits[0])
    expected = -np.log(p[0, 1] * p[1, 1] + p[0, 1] * p[1, 0] + p[0, 0] * p[1, 1])
    loss, n = losses.ctc_loss(
        jnp.asarray(logits), jnp.zeros((1, 2), bool), jnp.array([[1, 0]]), jnp.array([[False, True]])
    )
    np.testing.assert_allclose(float(loss[0]), expected, rtol=1e-5)
    assert int(n[0]) == 1


def test_ctc_loss_zero_infinity_for_impossible_alignment():
    logits = jnp.zeros((1, 2, 3))
    loss, _ = losses.ctc_loss(logits, jnp.zeros((1, 2), bool), jnp.array([[1, 1, 2]]), jnp.zeros((1, 3), bool))
    assert float(loss[0]) == 0.0
