"""Greedy and beam-search generation for `Wav2Vec2ForSpeechTranslation`, inside one `jit`.

The encoder runs once per batch; the decoder then takes one cached step per token inside a
`jax.lax.while_loop`, so nothing comes back to the host until the batch is done, and every
array has a static shape: a program compiles once per (batch, samples, max_length, settings).

The search reproduces transformers 5's `generate` token for token (`GenerationMixin._sample`
with do_sample=False, and the vectorised `_beam_search`), including the processors the
translation models use: `forced_bos_token_id` (the target-language token as the first
generated token), `forced_eos_token_id` (EOS forced at the last position), and beam search's
length penalty and `early_stopping` heuristics. Sequences start with `decoder_start_token_id`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from xlsr_jax.models.decoder import DecoderCache

_NEG = -1.0e9  # HF's "impossible" score in beam search (a finite number, not -inf)


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """How to search; field names and defaults follow transformers' `GenerationConfig`.

    max_length counts the decoder start token (as HF's). early_stopping: True stops a batch
    item once it has num_beams finished hypotheses; False (HF default) stops when the best
    running beam, scored at the current length, cannot beat the worst finished one; "never"
    scores it at max_length when length_penalty > 0 (the canonical beam search).
    """

    max_length: int = 200
    num_beams: int = 1
    length_penalty: float = 1.0  # finished score = sum of log-probs / generated_length ** length_penalty
    early_stopping: bool | str = False
    decoder_start_token_id: int = 2
    eos_token_id: int = 2
    pad_token_id: int = 1
    forced_bos_token_id: int | None = None  # first generated token (the target language)
    forced_eos_token_id: int | None = None  # token forced at position max_length - 1

    def __post_init__(self):
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 (start token + one generated), got {self.max_length}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")

    @classmethod
    def from_hf(cls, values: dict[str, Any], **overrides: Any) -> GenerationConfig:
        """From a generation_config.json dict (unknown fields ignored), with overrides."""
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in values.items() if k in names and v is not None}
        if isinstance(kept.get("eos_token_id"), list):
            kept["eos_token_id"] = kept["eos_token_id"][0]
        kept.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kept)

    def to_hf(self) -> dict[str, Any]:
        """The generation_config.json fields (transformers names)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class GenerationOutput(NamedTuple):
    sequences: jax.Array  # int32 [batch, max_length]: start token, tokens, EOS, then padding
    lengths: jax.Array  # int32 [batch]: tokens up to and including EOS (start token included)
    scores: jax.Array  # float32 [batch]: beam score (length-penalised) or greedy sum of log-probs


def _process(log_probs: jax.Array, cur_len: jax.Array, gen: GenerationConfig, forced_bos=None) -> jax.Array:
    """HF's ForcedBOS / ForcedEOS processors on [rows, vocab] scores for position cur_len;
    `forced_bos` (int [rows]) forces a token per row instead of gen.forced_bos_token_id."""

    def force(scores, token):
        return jnp.full_like(scores, -jnp.inf).at[:, token].set(0.0)

    if forced_bos is not None:
        per_row = jnp.where(jnp.arange(log_probs.shape[-1])[None, :] == forced_bos[:, None], 0.0, -jnp.inf)
        log_probs = jnp.where(cur_len == 1, per_row, log_probs)
    elif gen.forced_bos_token_id is not None:
        log_probs = jnp.where(cur_len == 1, force(log_probs, gen.forced_bos_token_id), log_probs)
    if gen.forced_eos_token_id is not None:
        log_probs = jnp.where(cur_len == gen.max_length - 1, force(log_probs, gen.forced_eos_token_id), log_probs)
    return log_probs


def _check(model, gen: GenerationConfig) -> None:
    positions = model.config.decoder.max_position_embeddings
    if gen.max_length > positions:
        raise ValueError(f"max_length {gen.max_length} exceeds the decoder's {positions} positions")


@functools.partial(jax.jit, static_argnames=("model", "gen"))
def generate(
    model, params, audio: jax.Array, padding_mask: jax.Array | None, gen: GenerationConfig, forced_bos=None
) -> GenerationOutput:
    """Translates a batch: greedy when gen.num_beams == 1, else beam search.

    Args:
      model: a `Wav2Vec2ForSpeechTranslation` (static).
      params: its parameters.
      audio: float [batch, samples]; padding_mask: bool [batch, samples], True at padding (or None).
      gen: `GenerationConfig` (static).
      forced_bos: optional int [batch]: the first generated token of each row (its target
        language, for a batch that mixes them); overrides gen.forced_bos_token_id.
    Returns:
      `GenerationOutput`; sequences start with decoder_start_token_id, as HF's.
    """
    _check(model, gen)
    variables = {"params": params}
    hidden, frame_padding = model.apply(variables, audio, padding_mask, method="encode")
    if gen.num_beams == 1:
        return _greedy(model, variables, hidden, frame_padding, gen, forced_bos)
    return _beam_search(model, variables, hidden, frame_padding, gen, forced_bos)


def _step(model, variables, tokens: jax.Array, cache: DecoderCache):
    logits, cache = model.apply(variables, tokens[:, None], cache, method="decode_step")
    return jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1), cache  # [rows, vocab]


def _greedy(model, variables, hidden, frame_padding, gen: GenerationConfig, forced_bos=None) -> GenerationOutput:
    batch = hidden.shape[0]
    cache = model.apply(variables, hidden, frame_padding, gen.max_length, method="init_cache")
    sequences = jnp.full((batch, gen.max_length), gen.pad_token_id, jnp.int32)
    sequences = sequences.at[:, 0].set(gen.decoder_start_token_id)
    state = (
        sequences,
        jnp.ones((batch,), bool),  # unfinished
        jnp.full((batch,), gen.max_length, jnp.int32),  # lengths
        jnp.zeros((batch,), jnp.float32),  # scores
        jnp.asarray(1, jnp.int32),  # cur_len
        cache,
    )

    def cond(state):
        _, unfinished, _, _, cur_len, _ = state
        return jnp.any(unfinished) & (cur_len < gen.max_length)

    def body(state):
        sequences, unfinished, lengths, scores, cur_len, cache = state
        log_probs, cache = _step(model, variables, sequences[:, cur_len - 1], cache)
        log_probs = _process(log_probs, cur_len, gen, forced_bos)
        token = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
        scores = scores + jnp.where(unfinished, jnp.take_along_axis(log_probs, token[:, None], 1)[:, 0], 0.0)
        token = jnp.where(unfinished, token, gen.pad_token_id)
        sequences = jax.lax.dynamic_update_slice_in_dim(sequences, token[:, None], cur_len, axis=1)
        ended = unfinished & (token == gen.eos_token_id)
        lengths = jnp.where(ended, cur_len + 1, lengths)
        return sequences, unfinished & ~ended, lengths, scores, cur_len + 1, cache

    sequences, _, lengths, scores, _, _ = jax.lax.while_loop(cond, body, state)
    return GenerationOutput(sequences, lengths, scores)


def _gather(x: jax.Array, index: jax.Array) -> jax.Array:
    """x [batch, beams, ...] gathered along beams with index [batch, k] -> [batch, k, ...]."""
    index = index.reshape(index.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=1)


def _beam_search(model, variables, hidden, frame_padding, gen: GenerationConfig, forced_bos=None) -> GenerationOutput:
    """transformers' vectorised beam search (generation/utils.py `_beam_search`), one EOS token."""
    batch, n, L = hidden.shape[0], gen.num_beams, gen.max_length
    keep = 2 * n  # beams_to_keep = max(2, 1 + number of EOS tokens) * num_beams
    prompt_len = 1
    # Cross-attention keys/values once per utterance, then one row per beam (HF's layout:
    # utterance i's beams are rows i * n ... i * n + n - 1).
    cache = model.apply(variables, hidden, frame_padding, L, method="init_cache")
    cache = jax.tree_util.tree_map(lambda x: jnp.repeat(x, n, axis=0) if x.ndim else x, cache)
    # HF fills with `pad_token_id or eos_token_id` (a pad id of 0 is falsy there).
    fill = gen.pad_token_id if gen.pad_token_id else gen.eos_token_id
    running = jnp.full((batch, n, L), fill, jnp.int32).at[:, :, 0].set(gen.decoder_start_token_id)
    state = dict(
        running=running,
        running_scores=jnp.zeros((batch, n), jnp.float32).at[:, 1:].set(_NEG),
        sequences=running,
        lengths=jnp.full((batch, n), L, jnp.int32),
        scores=jnp.full((batch, n), _NEG, jnp.float32),
        finished=jnp.zeros((batch, n), bool),
        unsatisfied=jnp.ones((batch, 1), bool),  # HF is_early_stop_heuristic_unsatisfied
        all_hit=jnp.asarray(False),
        cur_len=jnp.asarray(prompt_len, jnp.int32),
        cache=cache,
    )
    top_n_mask = jnp.arange(keep) < n
    if forced_bos is not None:
        forced_bos = jnp.repeat(forced_bos, n)  # one per beam row

    def cond(s):
        improvement_possible = jnp.any(s["unsatisfied"])
        open_beam = ~(jnp.all(s["finished"]) & (gen.early_stopping is True))
        return improvement_possible & open_beam & ~s["all_hit"] & (s["cur_len"] < L)

    def body(s):
        cur_len = s["cur_len"]
        tokens = jax.lax.dynamic_index_in_dim(s["running"], cur_len - 1, axis=2, keepdims=False)  # [batch, n]
        log_probs, cache = _step(model, variables, tokens.reshape(-1), s["cache"])
        log_probs = _process(log_probs, cur_len, gen, forced_bos)
        vocab = log_probs.shape[-1]
        total = log_probs.reshape(batch, n, vocab) + s["running_scores"][:, :, None]
        top_scores, top_index = jax.lax.top_k(total.reshape(batch, n * vocab), keep)  # [batch, keep]
        source, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
        top_sequences = _gather(s["running"], source)
        top_sequences = jax.lax.dynamic_update_slice_in_dim(top_sequences, token[:, :, None], cur_len, axis=2)
        hit = (token == gen.eos_token_id) | (cur_len + 1 >= L)  # EOS or max length reached

        # The best num_beams continuations that did not stop keep running.
        running_scores = top_scores + hit.astype(jnp.float32) * _NEG
        running_scores, pick = jax.lax.top_k(running_scores, n)
        running = _gather(top_sequences, pick)
        beam_source = jnp.take_along_axis(source, pick, axis=1)  # [batch, n]

        # Stopped ones among the top num_beams compete with the finished hypotheses.
        done = hit & top_n_mask[None, :]
        final = top_scores / ((cur_len + 1 - prompt_len).astype(jnp.float32) ** gen.length_penalty)
        full = jnp.all(s["finished"], axis=-1, keepdims=True) & (gen.early_stopping is True)
        final = final + full.astype(jnp.float32) * _NEG
        final = final + (~s["unsatisfied"]).astype(jnp.float32) * _NEG
        final = final + (~done).astype(jnp.float32) * _NEG
        merged_scores = jnp.concatenate([s["scores"], final], axis=1)
        merged_sequences = jnp.concatenate([s["sequences"], top_sequences], axis=1)
        merged_lengths = jnp.concatenate([s["lengths"], jnp.broadcast_to(cur_len + 1, final.shape)], axis=1)
        merged_finished = jnp.concatenate([s["finished"], done], axis=1)
        scores, best = jax.lax.top_k(merged_scores, n)
        sequences = _gather(merged_sequences, best)
        lengths = jnp.take_along_axis(merged_lengths, best, axis=1)
        finished = jnp.take_along_axis(merged_finished, best, axis=1)

        # Each running beam continues from its source beam's cache rows.
        rows = (beam_source + jnp.arange(batch)[:, None] * n).reshape(-1)
        cache = cache._replace(
            self_key=tuple(k[rows] for k in cache.self_key), self_value=tuple(v[rows] for v in cache.self_value)
        )

        cur_len = cur_len + 1
        if gen.early_stopping == "never" and gen.length_penalty > 0.0:
            best_length = jnp.asarray(L - prompt_len, jnp.float32)
        else:
            best_length = (cur_len - prompt_len).astype(jnp.float32)
        best_running = running_scores[:, :1] / best_length**gen.length_penalty
        worst_finished = jnp.where(finished, jnp.min(scores, axis=1, keepdims=True), _NEG)
        unsatisfied = s["unsatisfied"] & jnp.any(best_running > worst_finished, axis=-1, keepdims=True)
        return dict(
            running=running,
            running_scores=running_scores,
            sequences=sequences,
            lengths=lengths,
            scores=scores,
            finished=finished,
            unsatisfied=unsatisfied,
            all_hit=jnp.all(hit),
            cur_len=cur_len,
            cache=cache,
        )

    s = jax.lax.while_loop(cond, body, state)
    return GenerationOutput(s["sequences"][:, 0], s["lengths"][:, 0], s["scores"][:, 0])


def trim(output: GenerationOutput) -> list[list[int]]:
    """Host side: each sequence up to its length, start token and EOS included (HF's tokens)."""
    sequences, lengths = jax.device_get((output.sequences, output.lengths))
    return [list(map(int, row[:length])) for row, length in zip(sequences, lengths)]
