"""Speech translation: the XLS-R encoder with its adapter, and an mBART decoder.

transformers' `SpeechEncoderDecoderModel` (modeling_speech_encoder_decoder.py) as released for
XLS-R (`facebook/wav2vec2-xls-r-{300m,1b,2b}-21-to-en`, `-en-to-15`; Babu et al. 2021 §5.1):
`Wav2Vec2Model` with `add_adapter=True` as the encoder, `MBartForCausalLM` as the decoder
cross-attending to the adapter's output, and a linear `enc_to_dec_proj` only when the encoder's
output width differs from the decoder's.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from xlsr_jax import sharding as shd
from xlsr_jax.models.adapter import Adapter
from xlsr_jax.models.config import Wav2Vec2Config, get_preset
from xlsr_jax.models.decoder import Decoder, DecoderCache, MBartDecoderConfig, tiny_decoder_config
from xlsr_jax.models.layers import Dense
from xlsr_jax.models.wav2vec2 import Wav2Vec2Model, adapter_padding_mask


@dataclasses.dataclass(frozen=True)
class SpeechTranslationConfig:
    """Encoder, decoder and the special tokens that tie them (HF `SpeechEncoderDecoderConfig`).

    Token ids follow mBART-50's fairseq dictionary (<s>=0, <pad>=1, </s>=2): training shifts the
    labels right behind `decoder_start_token_id` (HF `shift_tokens_right`), and generation starts
    from it too (the released models use 2, </s>, then force the target-language token).
    """

    encoder: Wav2Vec2Config = dataclasses.field(default_factory=lambda: get_preset("large", add_adapter=True))
    decoder: MBartDecoderConfig = dataclasses.field(default_factory=MBartDecoderConfig)
    decoder_start_token_id: int = 2
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2

    def __post_init__(self):
        if isinstance(self.encoder, dict):
            object.__setattr__(self, "encoder", Wav2Vec2Config.from_dict(self.encoder))
        if isinstance(self.decoder, dict):
            object.__setattr__(self, "decoder", MBartDecoderConfig.from_dict(self.decoder))

    @property
    def needs_enc_to_dec_proj(self) -> bool:
        """HF adds `enc_to_dec_proj` when the encoder's output width is not the decoder's."""
        return self.encoder.encoder_output_size != self.decoder.d_model

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["encoder"] = self.encoder.to_dict()
        out["decoder"] = self.decoder.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SpeechTranslationConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown SpeechTranslationConfig fields: {unknown}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SpeechTranslationConfig:
        return cls.from_dict(json.loads(text))


def tiny_speech_translation_config(encoder_overrides=None, decoder_overrides=None, **overrides):
    """The tiny encoder preset with a 2-layer adapter, and the tiny decoder (tests, demo)."""
    enc = dict(add_adapter=True, num_adapter_layers=2, output_hidden_size=48)
    enc.update(encoder_overrides or {})
    dec = dict(d_model=48)
    dec.update(decoder_overrides or {})
    return SpeechTranslationConfig(get_preset("tiny", **enc), tiny_decoder_config(**dec), **overrides)


def shift_tokens_right(labels: jax.Array, pad_token_id: int, decoder_start_token_id: int) -> jax.Array:
    """Decoder inputs for teacher forcing: start token, then labels[:, :-1] (HF's rule).

    Args:
      labels: int [batch, t], padded with `pad_token_id` (or -100, which becomes padding).
    Returns:
      int32 [batch, t].
    """
    labels = jnp.where(labels == -100, pad_token_id, labels).astype(jnp.int32)
    start = jnp.full((labels.shape[0], 1), decoder_start_token_id, jnp.int32)
    return jnp.concatenate([start, labels[:, :-1]], axis=1)


class Wav2Vec2ForSpeechTranslation(nn.Module):
    """Encoder, adapter and decoder, with methods for training and for cached generation.

    Parameters: `wav2vec2` (the pretrained `Wav2Vec2Model`, the name every head model gives it,
    so pretraining checkpoints initialise it and fine-tuning freezes it as for CTC), `adapter`
    (HF keeps it inside the encoder, `encoder.adapter.*`; here it is new, trained from the first
    update, like the decoder), `decoder`, and `enc_to_dec_proj` when widths differ.
    """

    config: SpeechTranslationConfig

    def setup(self):
        cfg = self.config
        if not cfg.encoder.add_adapter:
            raise ValueError("the speech-translation encoder needs add_adapter=True (as the released models)")
        self.wav2vec2 = Wav2Vec2Model(dataclasses.replace(cfg.encoder, add_adapter=False))
        self.adapter = Adapter(cfg.encoder)
        self.decoder = Decoder(cfg.decoder)
        if cfg.needs_enc_to_dec_proj:
            self.enc_to_dec_proj = Dense(cfg.decoder.d_model, (shd.CONV_IN, shd.EMBED), dtype=cfg.decoder.compute_dtype)

    def encode(
        self, audio: jax.Array, padding_mask: jax.Array | None = None, deterministic: bool = True
    ) -> tuple[jax.Array, jax.Array]:
        """audio float [batch, samples] (+ bool padding [batch, samples]) -> (encoder states
        [batch, frames', d_model], bool padding [batch, frames']) at the adapter's frame rate.

        Time/channel masking applies in training, as in CTC fine-tuning (rng 'mask').
        """
        cfg = self.config.encoder
        out = self.wav2vec2(audio, padding_mask, deterministic, mask_time=not deterministic and cfg.mask_time_prob > 0)
        hidden = self.adapter(out.last_hidden_state, deterministic)  # [batch, frames', output_hidden_size]
        frame_padding = adapter_padding_mask(cfg, padding_mask, hidden.shape[1], hidden.shape[0])
        if self.config.needs_enc_to_dec_proj:
            hidden = self.enc_to_dec_proj(hidden)
        return hidden, frame_padding

    def __call__(
        self,
        audio: jax.Array,
        padding_mask: jax.Array | None,
        decoder_input_ids: jax.Array,
        deterministic: bool = True,
    ) -> jax.Array:
        """Teacher-forced logits float32 [batch, t, vocab] for decoder_input_ids int [batch, t]."""
        hidden, frame_padding = self.encode(audio, padding_mask, deterministic)
        return self.decoder(decoder_input_ids, hidden, frame_padding, deterministic)

    def init_cache(self, encoder_hidden: jax.Array, encoder_padding_mask: jax.Array, max_length: int) -> DecoderCache:
        """See `Decoder.init_cache`."""
        return self.decoder.init_cache(encoder_hidden, encoder_padding_mask, max_length)

    def decode_step(self, input_ids: jax.Array, cache: DecoderCache) -> tuple[jax.Array, DecoderCache]:
        """See `Decoder.decode_step`."""
        return self.decoder.decode_step(input_ids, cache)
