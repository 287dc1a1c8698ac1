"""Span masks and negative sampling against an independent NumPy model of fairseq's algorithm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xlsr_jax import masking


def fairseq_like_mask(rng, lengths, frames, mask_prob, mask_length, min_masks, require_same_masks):
    """NumPy restatement of fairseq's compute_mask_indices (static spans, no overlap rules)."""
    mask = np.zeros((len(lengths), frames), bool)
    chosen = []
    for sz in lengths:
        num = max(min_masks, int(mask_prob * sz / float(mask_length) + rng.random()))
        min_len = mask_length
        if sz - min_len <= num:
            min_len = sz - num - 1
        starts = rng.choice(sz - min_len, num, replace=False)
        idx = np.asarray([s + o for s in starts for o in range(mask_length)])
        chosen.append(np.unique(idx[idx < sz]))
    min_count = min(len(c) for c in chosen)
    for i, c in enumerate(chosen):
        if require_same_masks and len(c) > min_count:
            c = rng.choice(c, min_count, replace=False)
        mask[i, c] = True
    return mask


@pytest.mark.parametrize("mask_prob,mask_length", [(0.65, 10), (0.5, 5), (0.05, 10)])
def test_masked_fraction_matches_fairseq(mask_prob, mask_length):
    frames, trials = 400, 200
    lengths = np.array([400, 350, 250, 120])
    np_rng = np.random.default_rng(0)
    ref = np.mean(
        [
            fairseq_like_mask(np_rng, lengths, frames, mask_prob, mask_length, 2, False).sum(1) / lengths
            for _ in range(trials)
        ],
        axis=0,
    )
    fn = jax.jit(
        lambda k: masking.compute_span_mask(
            k, (4, frames), jnp.asarray(lengths), mask_prob, mask_length, 2, require_same_masks=False
        )
    )
    ours = np.mean([np.asarray(fn(k)).sum(1) / lengths for k in jax.random.split(jax.random.key(0), trials)], axis=0)
    # Per-row standard error is ~0.005 for 200 trials; a systematic difference would be far larger.
    np.testing.assert_allclose(ours, ref, atol=0.02)
    if (mask_prob, mask_length) == (0.65, 10):
        # The wav2vec 2.0 paper: "about 49% of all time steps are masked".
        assert 0.45 < ours[0] < 0.52


def test_mask_has_equal_counts_spans_and_never_touches_padding():
    lengths = jnp.array([200, 180, 90, 200])
    for key in jax.random.split(jax.random.key(1), 20):
        mask = np.asarray(masking.compute_span_mask(key, (4, 200), lengths, 0.65, 10, 2, True))
        counts = mask.sum(1)
        assert len(set(counts.tolist())) == 1 and counts[0] > 0
        for row, n in zip(mask, np.asarray(lengths)):
            assert not row[n:].any()


def test_unequal_mask_is_a_union_of_full_spans():
    mask = np.asarray(masking.compute_span_mask(jax.random.key(2), (1, 300), None, 0.2, 10, 2, False))[0]
    # Every run of masked frames is a union of length-10 spans: at least 10 long unless clipped
    # by the end of the utterance.
    runs, start = [], None
    for t, m in enumerate(np.append(mask, False)):
        if m and start is None:
            start = t
        if not m and start is not None:
            runs.append((start, t))
            start = None
    assert runs
    for a, b in runs:
        assert b - a >= 10 or b == 300


def test_min_masks_applies_to_short_utterances():
    mask = np.asarray(
        masking.compute_span_mask(
            jax.random.key(3), (2, 60), jnp.array([30, 60]), 0.0, 5, min_masks=2, require_same_masks=False
        )
    )
    assert mask[0].sum() >= 5 and not mask[0, 30:].any()


def test_negatives_come_from_other_masked_frames_of_the_same_row():
    lengths = jnp.array([120, 80])
    mask = masking.compute_span_mask(jax.random.key(4), (2, 120), lengths, 0.65, 10, 2, True)
    neg = np.asarray(masking.sample_negatives(jax.random.key(5), mask, 50))
    mask = np.asarray(mask)
    assert neg.shape == (2, 120, 50)
    for b in range(2):
        for t in np.flatnonzero(mask[b]):
            assert mask[b, neg[b, t]].all(), "a distractor is not a masked frame"
            assert (neg[b, t] != t).all(), "a distractor is the positive itself"


def test_negatives_are_uniform_over_candidates():
    mask = jnp.zeros((1, 40), bool).at[0, 10:20].set(True)
    neg = np.asarray(masking.sample_negatives(jax.random.key(6), mask, 9000))[0, 12]
    counts = np.bincount(neg, minlength=40)[10:20]
    assert counts[2] == 0  # frame 12 is the positive
    others = np.delete(counts, 2)
    # 9000 draws over 9 candidates: 1000 each, standard deviation ~31.
    assert np.all(np.abs(others - 1000) < 150), others


def test_channel_mask_shape_and_rate():
    mask = np.asarray(masking.compute_channel_mask(jax.random.key(7), 64, 512, 0.1, 64, 0))
    assert mask.shape == (64, 512)
    assert 0.03 < mask.mean() < 0.15
