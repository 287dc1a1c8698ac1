"""transformers `SpeechEncoderDecoderModel` (Wav2Vec2 + adapter, mBART decoder) <-> ours.

The config.json of such a folder holds the encoder's and the decoder's configs as nested dicts
(`encoder`, `decoder`) and the special tokens at the top; the state dict prefixes the encoder
with `encoder.`, the decoder with `decoder.` (see `tables.speech_translation_param_table`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from xlsr_jax.convert import configs, tables
from xlsr_jax.convert import params as params_lib
from xlsr_jax.convert.configs import ConfigError
from xlsr_jax.models.decoder import MBartDecoderConfig
from xlsr_jax.models.speech_translation import SpeechTranslationConfig

MODEL_TYPE = "speech-encoder-decoder"
ARCHITECTURE = "SpeechEncoderDecoderModel"

# transformers 5.23 `MBartConfig` class defaults (configuration_mbart.py), for fields a
# config.json leaves out.
MBART_HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50265,
    "max_position_embeddings": 1024,
    "decoder_layers": 12,
    "decoder_ffn_dim": 4096,
    "decoder_attention_heads": 16,
    "decoder_layerdrop": 0.0,
    "activation_function": "gelu",
    "d_model": 1024,
    "dropout": 0.1,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "init_std": 0.02,
    "scale_embedding": False,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "forced_eos_token_id": 2,
    "tie_word_embeddings": True,
}
_DECODER_OURS_ONLY = ("dtype",)
_TOKEN_FIELDS = ("decoder_start_token_id", "pad_token_id", "bos_token_id", "eos_token_id")
# HF has no masked_spec_embed when masking is off (our model always has one).
_ENCODER_MASKED = r"encoder\.masked_spec_embed"


def hf_to_st_config(hf: Mapping[str, Any], **encoder_overrides: Any) -> tuple[SpeechTranslationConfig, dict]:
    """A `SpeechEncoderDecoderModel` config.json dict -> (our config, HF extras to keep).

    Raises:
      ConfigError when it is not a speech-encoder-decoder config, the encoder is not a wav2vec2
      model with `add_adapter`, or the decoder is not mBART.
    """
    if hf.get("model_type") != MODEL_TYPE:
        raise ConfigError(f"expected model_type {MODEL_TYPE!r}, got {hf.get('model_type')!r}")
    enc, dec = dict(hf.get("encoder") or {}), dict(hf.get("decoder") or {})
    if not enc.get("add_adapter"):
        raise ConfigError("the encoder config has no adapter (add_adapter); the XLS-R translation models have one")
    if dec.get("model_type") != "mbart":
        raise ConfigError(f"decoder model_type {dec.get('model_type')!r} is not supported; expected 'mbart'")
    enc["architectures"] = ["Wav2Vec2Model"]
    encoder, _, _ = configs.hf_to_config(enc, **encoder_overrides)
    full_dec = {**MBART_HF_DEFAULTS, **dec}
    dec_fields = {f.name for f in dataclasses.fields(MBartDecoderConfig)} - set(_DECODER_OURS_ONLY)
    dec_values = {k: full_dec[k] for k in dec_fields if k in full_dec}
    dec_values.update({k: v for k, v in (dec.get(configs.OURS_ONLY_KEY) or {}).items() if k in _DECODER_OURS_ONLY})
    decoder = MBartDecoderConfig.from_dict(dec_values)
    tokens = {}
    for name in _TOKEN_FIELDS:
        value = hf.get(name)
        if value is None:
            value = full_dec.get(name)
        if value is not None:
            tokens[name] = int(value)
    config = SpeechTranslationConfig(encoder, decoder, **tokens)
    extras = {k: v for k, v in hf.items() if k in ("forced_bos_token_id", "forced_eos_token_id", "max_length")}
    return config, extras


def st_config_to_hf(config: SpeechTranslationConfig, extras: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Our config -> a complete `SpeechEncoderDecoderModel` config.json dict.

    Raises:
      ConfigError for an adapter projection followed by enc_to_dec_proj: transformers sizes
      enc_to_dec_proj by the encoder's hidden_size, not the adapter's output, so it cannot run one.
    """
    enc_cfg = config.encoder
    if config.needs_enc_to_dec_proj and enc_cfg.adapter_hidden_size != enc_cfg.hidden_size:
        raise ConfigError(
            f"output_hidden_size {enc_cfg.adapter_hidden_size} differs from both hidden_size {enc_cfg.hidden_size} "
            f"and the decoder's d_model {config.decoder.d_model}: transformers cannot build that model"
        )
    enc = configs.config_to_hf(config.encoder, "Wav2Vec2Model")
    dec = {**MBART_HF_DEFAULTS, **{k: v for k, v in config.decoder.to_dict().items() if k not in _DECODER_OURS_ONLY}}
    dec.update(
        model_type="mbart",
        is_decoder=True,
        add_cross_attention=True,
        is_encoder_decoder=False,
        decoder_start_token_id=config.decoder_start_token_id,
        architectures=["MBartForCausalLM"],
    )
    dec[configs.OURS_ONLY_KEY] = {k: getattr(config.decoder, k) for k in _DECODER_OURS_ONLY}
    out: dict[str, Any] = {
        "model_type": MODEL_TYPE,
        "architectures": [ARCHITECTURE],
        "is_encoder_decoder": True,
        "tie_word_embeddings": False,
        "encoder": enc,
        "decoder": dec,
    }
    out.update({name: getattr(config, name) for name in _TOKEN_FIELDS})
    out.update(dict(extras or {}))
    return out


def hf_state_to_st_params(state: Mapping[str, np.ndarray], config: SpeechTranslationConfig) -> dict[str, Any]:
    """A `SpeechEncoderDecoderModel` state dict (numpy) -> our parameter tree (float32 numpy).

    A tied `decoder.lm_head.weight` (the embedding again, in `state_dict()` though not in the
    saved files) is dropped; HF leaves out the encoder's masked_spec_embed when masking is off.

    Raises:
      CheckpointMismatchError naming every missing, unexpected and mis-shaped key.
    """
    rules = tables.speech_translation_param_table(config)
    state = {tables.rename_by_table(k, tables.HF_LEGACY_RENAMES) or k: v for k, v in state.items()}
    ignore = (r"decoder\.lm_head\.weight",) if config.decoder.tie_word_embeddings else ()
    layers = config.encoder.num_hidden_layers if config.encoder.scan_layers else None
    params = params_lib.state_to_params_by_rules(
        state, rules, ARCHITECTURE, layers, allow_missing=(_ENCODER_MASKED,), ignore_unexpected=ignore
    )
    params["wav2vec2"].setdefault("masked_spec_embed", np.zeros((config.encoder.hidden_size,), np.float32))
    return params


def st_params_to_hf_state(params: Mapping[str, Any], config: SpeechTranslationConfig) -> dict[str, np.ndarray]:
    """Our parameter tree -> a `SpeechEncoderDecoderModel` state dict (float32 numpy), as
    `save_pretrained` writes it (no tied lm_head)."""
    params = _to_numpy(params)
    rules = tables.speech_translation_param_table(config)
    layers = config.encoder.num_hidden_layers if config.encoder.scan_layers else None
    return params_lib.params_to_state_by_rules(
        params, rules, ARCHITECTURE, layers, optional={("wav2vec2", "masked_spec_embed")}
    )


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree, dtype=np.float32)


def mbart_decoder_config(hf: Mapping[str, Any], **overrides: Any) -> MBartDecoderConfig:
    """The decoder half of an mBART `config.json` (model_type "mbart"; e.g. facebook/mbart-large-50).

    Raises:
      ConfigError for another model type.
    """
    if hf.get("model_type") != "mbart":
        raise ConfigError(f"expected an mBART config.json (model_type 'mbart'), got {hf.get('model_type')!r}")
    full = {**MBART_HF_DEFAULTS, **hf}
    names = {f.name for f in dataclasses.fields(MBartDecoderConfig)} - set(_DECODER_OURS_ONLY)
    return MBartDecoderConfig.from_dict({**{k: full[k] for k in names if k in full}, **overrides})


def mbart_decoder_params(state: Mapping[str, np.ndarray], decoder: MBartDecoderConfig) -> dict[str, Any]:
    """Our `Decoder` parameters from any transformers model holding an mBART decoder.

    MBartForConditionalGeneration (`model.decoder.*`, the paper's mBART-50 initialisation),
    MBartForCausalLM (same keys) or SpeechEncoderDecoderModel (`decoder.model.decoder.*`); every
    other tensor (the mBART encoder, `final_logits_bias`, a tied lm_head) is left out.

    Returns:
      The `decoder` subtree of `Wav2Vec2ForSpeechTranslation`'s parameters.
    Raises:
      CheckpointMismatchError when the decoder's keys or shapes do not match `decoder`.
    """
    anchor = "model.decoder.embed_positions.weight"
    prefixes = [k[: -len(anchor)] for k in state if k.endswith(anchor)]
    if len(prefixes) != 1:
        raise params_lib.CheckpointMismatchError(f"expected one mBART decoder ({anchor}) in the state dict")
    prefix = prefixes[0]
    rules = tables.decoder_param_table(decoder, hf_prefix=prefix)
    wanted = {k: v for k, v in state.items() if k.startswith(prefix + "model.decoder.")}
    if not decoder.tie_word_embeddings and prefix + "lm_head.weight" in state:
        wanted[prefix + "lm_head.weight"] = state[prefix + "lm_head.weight"]
    return params_lib.state_to_params_by_rules(wanted, rules, "mBART decoder")["decoder"]
