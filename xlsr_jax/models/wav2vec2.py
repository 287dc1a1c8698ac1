"""wav2vec 2.0 / XLSR / XLS-R: the encoder model and its heads (pretraining, CTC, classification).

Padding follows fairseq: `padding_mask` is True where a sample (or frame) is padding.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from xlsr_jax import masking
from xlsr_jax import sharding as shd
from xlsr_jax.models.adapter import Adapter
from xlsr_jax.models.config import Wav2Vec2Config
from xlsr_jax.models.feature_encoder import FeatureEncoder
from xlsr_jax.models.layers import Dense, LayerNorm, dropout
from xlsr_jax.models.quantizer import GumbelVectorQuantizer
from xlsr_jax.models.transformer import Encoder


class Wav2Vec2Output(NamedTuple):
    last_hidden_state: jax.Array  # [batch, frames, hidden]; after the adapter (if any): fewer, wider
    extract_features: jax.Array  # [batch, frames, conv_dim[-1]]: conv features after layer norm
    padding_mask: jax.Array  # bool [batch, frames], True at padding frames of last_hidden_state
    mask_time_indices: jax.Array | None  # bool [batch, frames], True where the input was masked
    feature_penalty: jax.Array  # scalar: mean squared conv feature (fairseq features_pen)
    hidden_states: tuple[jax.Array, ...] | None  # num_hidden_layers + 1 arrays (HF semantics)


class PretrainingOutput(NamedTuple):
    logits: jax.Array  # float32 [batch, frames, 1 + K]: positive first, then K distractors
    mask_time_indices: jax.Array  # bool [batch, frames]: frames that enter the loss
    codes: jax.Array  # int32 [batch, frames, groups]: quantizer choices (targets)
    code_perplexity: jax.Array  # scalar
    prob_perplexity: jax.Array  # scalar
    feature_penalty: jax.Array  # scalar
    num_codevectors: int  # G x V (static)


def frame_padding_mask(
    config: Wav2Vec2Config, padding_mask: jax.Array | None, num_frames: int, batch: int
) -> jax.Array:
    """Frame-level padding mask from a sample-level one (fairseq's output-length rule)."""
    if padding_mask is None:
        return jnp.zeros((batch, num_frames), bool)
    valid_samples = jnp.sum(~padding_mask, axis=-1)
    valid_frames = config.feature_lengths(valid_samples)
    return jnp.arange(num_frames)[None, :] >= valid_frames[:, None]


def adapter_padding_mask(
    config: Wav2Vec2Config, padding_mask: jax.Array | None, num_frames: int, batch: int
) -> jax.Array:
    """Padding mask [batch, num_frames] of the adapter's output (HF's output-length rule)."""
    if padding_mask is None:
        return jnp.zeros((batch, num_frames), bool)
    valid = config.encoder_output_lengths(jnp.sum(~padding_mask, axis=-1))
    return jnp.arange(num_frames)[None, :] >= valid[:, None]


class FeatureProjection(nn.Module):
    """LayerNorm over conv channels, then a linear map to the model width, then dropout."""

    config: Wav2Vec2Config

    @nn.compact
    def __call__(self, features: jax.Array, deterministic: bool):
        cfg = self.config
        normed = LayerNorm(cfg.layer_norm_eps, cfg.compute_dtype, name="layer_norm")(features)
        hidden = Dense(cfg.hidden_size, (shd.CONV_OUT, shd.EMBED), dtype=cfg.compute_dtype, name="projection")(normed)
        hidden = dropout(self, cfg.feat_proj_dropout, hidden, deterministic)
        return hidden, normed


class Wav2Vec2Model(nn.Module):
    """Feature encoder, projection, time/channel masking and the Transformer."""

    config: Wav2Vec2Config

    @nn.compact
    def __call__(
        self,
        audio: jax.Array,
        padding_mask: jax.Array | None = None,
        deterministic: bool = True,
        mask_time: bool = False,
        mask_time_indices: jax.Array | None = None,
        output_hidden_states: bool = False,
    ) -> Wav2Vec2Output:
        """Encodes audio.

        Args:
          audio: float [batch, samples] waveform (normalised if the model expects it).
          padding_mask: bool [batch, samples], True at padding; None = no padding.
          deterministic: no dropout / LayerDrop / random masking when True.
          mask_time: draw a span mask (rng stream 'mask') with the config's mask_time_* settings,
            fairseq-style with equal counts per row. Ignored when `mask_time_indices` is given.
          mask_time_indices: bool [batch, frames] mask to apply instead of drawing one.
          output_hidden_states: also return every layer's hidden states.
        Returns:
          `Wav2Vec2Output`.
        """
        cfg = self.config
        audio = nn.with_logical_constraint(audio, (shd.ACT_BATCH, shd.ACT_SAMPLES))
        features = FeatureEncoder(cfg, name="feature_extractor")(audio)  # [batch, frames, conv]
        feature_penalty = jnp.mean(jnp.square(features.astype(jnp.float32)))
        batch, frames, _ = features.shape
        frame_padding = frame_padding_mask(cfg, padding_mask, frames, batch)

        hidden, extract_features = FeatureProjection(cfg, name="feature_projection")(features, deterministic)
        masked_spec_embed = self.param(
            "masked_spec_embed",
            nn.with_logical_partitioning(nn.initializers.uniform(1.0), (shd.EMBED,)),
            (cfg.hidden_size,),
            jnp.float32,
        )
        if mask_time_indices is None and mask_time and (cfg.mask_time_prob > 0 or cfg.mask_time_min_masks > 0):
            lengths = jnp.sum(~frame_padding, axis=1)
            mask_time_indices = masking.compute_span_mask(
                self.make_rng("mask"),
                (batch, frames),
                lengths,
                cfg.mask_time_prob,
                cfg.mask_time_length,
                cfg.mask_time_min_masks,
                require_same_masks=True,
            )
        if mask_time_indices is not None:
            mask_time_indices = mask_time_indices & ~frame_padding
            hidden = jnp.where(mask_time_indices[..., None], masked_spec_embed.astype(hidden.dtype), hidden)
        if not deterministic and cfg.mask_feature_prob > 0:
            channel_mask = masking.compute_channel_mask(
                self.make_rng("mask"),
                batch,
                cfg.hidden_size,
                cfg.mask_feature_prob,
                cfg.mask_feature_length,
                cfg.mask_feature_min_masks,
            )
            hidden = jnp.where(channel_mask[:, None, :], 0, hidden)

        last, hidden_states = Encoder(cfg, name="encoder")(hidden, frame_padding, deterministic, output_hidden_states)
        if cfg.add_adapter:  # HF Wav2Vec2Model: the adapter runs on the encoder's output
            last = Adapter(cfg, name="adapter")(last, deterministic)  # [batch, frames', output_hidden_size]
            frame_padding = adapter_padding_mask(cfg, padding_mask, last.shape[1], batch)
        return Wav2Vec2Output(last, extract_features, frame_padding, mask_time_indices, feature_penalty, hidden_states)


def contrastive_logits(
    context: jax.Array,
    targets: jax.Array,
    negative_indices: jax.Array,
    codes: jax.Array,
    temperature: float,
) -> jax.Array:
    """Cosine-similarity logits of each frame against its target and K distractors.

    Computes one [frames x frames] similarity matrix per utterance and gathers from it, instead
    of gathering K distractor vectors per frame: the same numbers, K times less memory traffic.
    Distractors whose codes equal the positive's (so equal vectors) get -inf, as fairseq.

    Args:
      context: [batch, frames, dim] projected Transformer outputs.
      targets: [batch, frames, dim] projected quantized features.
      negative_indices: int [batch, frames, K] distractor frames (same utterance).
      codes: int [batch, frames, groups] quantizer choices, to detect distractor == positive.
      temperature: logits are cosine / temperature.
    Returns:
      float32 [batch, frames, 1 + K].
    """

    def unit(v):
        v = v.astype(jnp.float32)
        return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-8)

    sim = jnp.einsum("btd,bsd->bts", unit(context), unit(targets))  # [batch, frames, frames]
    positive = jnp.diagonal(sim, axis1=1, axis2=2)[..., None]  # [batch, frames, 1]
    negative = jnp.take_along_axis(sim, negative_indices, axis=2)  # [batch, frames, K]
    negative_codes = jax.vmap(lambda c, idx: c[idx])(codes, negative_indices)  # [b, t, K, groups]
    same = jnp.all(negative_codes == codes[:, :, None, :], axis=-1)
    negative = jnp.where(same, -jnp.inf, negative)
    return jnp.concatenate([positive, negative], axis=-1) / temperature


class Wav2Vec2ForPreTraining(nn.Module):
    """The self-supervised model: masked contrastive prediction of quantized latents."""

    config: Wav2Vec2Config

    @nn.compact
    def __call__(
        self,
        audio: jax.Array,
        padding_mask: jax.Array | None = None,
        gumbel_temperature: float | jax.Array = 2.0,
        deterministic: bool = True,
        mask_time_indices: jax.Array | None = None,
        sampled_negative_indices: jax.Array | None = None,
    ) -> PretrainingOutput:
        """Pretraining forward; the loss is `xlsr_jax.losses.pretraining_loss(output, config)`.

        Args:
          audio, padding_mask: as `Wav2Vec2Model`.
          gumbel_temperature: annealed by the trainer.
          deterministic: eval mode (no dropout, argmax codes; masks and distractors still drawn).
          mask_time_indices: bool [batch, frames] to use instead of drawing (rng 'mask').
          sampled_negative_indices: int [batch, frames, K] distractor frames instead of drawing.
        """
        cfg = self.config
        out = Wav2Vec2Model(cfg, name="wav2vec2")(
            audio, padding_mask, deterministic, mask_time=True, mask_time_indices=mask_time_indices
        )
        mask = out.mask_time_indices
        quantizer_input = dropout(self, cfg.feat_quantizer_dropout, out.extract_features, deterministic)
        quantized = GumbelVectorQuantizer(cfg, name="quantizer")(
            quantizer_input, mask, jnp.asarray(gumbel_temperature, jnp.float32), deterministic
        )
        targets = Dense(
            cfg.proj_codevector_dim, (shd.CODEVECTOR_DIM, shd.EMBED), dtype=cfg.compute_dtype, name="project_q"
        )(quantized.quantized)
        context = Dense(
            cfg.proj_codevector_dim, (shd.EMBED, shd.CODEVECTOR_DIM), dtype=cfg.compute_dtype, name="project_hid"
        )(out.last_hidden_state)
        if sampled_negative_indices is None:
            sampled_negative_indices = masking.sample_negatives(self.make_rng("mask"), mask, cfg.num_negatives)
        logits = contrastive_logits(
            context, targets, sampled_negative_indices, quantized.codes, cfg.contrastive_logits_temperature
        )
        return PretrainingOutput(
            logits,
            mask,
            quantized.codes,
            quantized.code_perplexity,
            quantized.prob_perplexity,
            out.feature_penalty,
            cfg.num_codevectors,
        )


class Wav2Vec2ForCTC(nn.Module):
    """Encoder + dropout + linear head over a character vocabulary (HF `Wav2Vec2ForCTC`)."""

    config: Wav2Vec2Config

    @nn.compact
    def __call__(
        self, audio: jax.Array, padding_mask: jax.Array | None = None, deterministic: bool = True
    ) -> tuple[jax.Array, jax.Array]:
        """Returns (logits float32 [batch, frames, vocab], frame padding mask [batch, frames]).

        Time masking (rng 'mask') and channel masking apply in training only, as in fine-tuning.
        """
        cfg = self.config
        out = Wav2Vec2Model(cfg, name="wav2vec2")(
            audio, padding_mask, deterministic, mask_time=not deterministic and cfg.mask_time_prob > 0
        )
        hidden = dropout(self, cfg.final_dropout, out.last_hidden_state, deterministic)
        logits = Dense(cfg.vocab_size, (shd.EMBED, shd.VOCAB), dtype=cfg.compute_dtype, name="lm_head")(hidden)
        return logits.astype(jnp.float32), out.padding_mask


class Wav2Vec2ForSequenceClassification(nn.Module):
    """Utterance classifier (language ID): projector, mean over valid frames, classifier."""

    config: Wav2Vec2Config

    @nn.compact
    def __call__(
        self, audio: jax.Array, padding_mask: jax.Array | None = None, deterministic: bool = True
    ) -> jax.Array:
        """Returns float32 logits [batch, num_labels]."""
        cfg = self.config
        out = Wav2Vec2Model(cfg, name="wav2vec2")(
            audio, padding_mask, deterministic, output_hidden_states=cfg.use_weighted_layer_sum
        )
        if cfg.use_weighted_layer_sum:
            num = cfg.num_hidden_layers + 1
            layer_weights = self.param(
                "layer_weights",
                nn.with_logical_partitioning(nn.initializers.constant(1.0 / num), (shd.LAYERS,)),
                (num,),
                jnp.float32,
            )
            stacked = jnp.stack(out.hidden_states, axis=0)
            hidden = jnp.einsum("l,lbtd->btd", jax.nn.softmax(layer_weights), stacked.astype(jnp.float32))
        else:
            hidden = out.last_hidden_state
        hidden = Dense(cfg.classifier_proj_size, (shd.EMBED, shd.MLP), dtype=cfg.compute_dtype, name="projector")(
            hidden
        )
        valid = (~out.padding_mask).astype(jnp.float32)[..., None]
        pooled = jnp.sum(hidden.astype(jnp.float32) * valid, axis=1) / jnp.maximum(jnp.sum(valid, axis=1), 1.0)
        logits = Dense(cfg.num_labels, (shd.MLP, shd.VOCAB), dtype=jnp.float32, name="classifier")(pooled)
        return logits
