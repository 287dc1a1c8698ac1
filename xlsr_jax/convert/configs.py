"""Configuration mapping: Hugging Face `config.json` and fairseq `cfg` <-> our `Wav2Vec2Config`.

Our `Wav2Vec2Config` uses Hugging Face's field names and meanings, so the HF mapping is mostly
a copy; the work here is (a) the fields that exist on one side only, (b) HF's `config.json`
omitting fields equal to its class defaults (transformers 5 saves a diff), and (c) fairseq's
differently named, differently defaulted fields, in both its `cfg` dict (hydra era) and its
older `args` Namespace.

The HF config is the source of truth for what a field means.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Mapping
from typing import Any

from xlsr_jax.models.config import ARCHITECTURES as _ALL_ARCHITECTURES
from xlsr_jax.models.config import Wav2Vec2Config

# The wav2vec2 config.json architectures; a translation model is a SpeechEncoderDecoderModel
# folder with its own config (`xlsr_jax.convert.speech_translation`).
ARCHITECTURES = tuple(a for a in _ALL_ARCHITECTURES if a != "Wav2Vec2ForSpeechTranslation")

# Architectures (HF class names) the converters handle, with the head each one carries.

# transformers 5.23 `Wav2Vec2Config` class defaults (configuration_wav2vec2.py). `save_pretrained`
# writes only the fields that differ from these, so a `config.json` must be read against them,
# not against our own defaults (which follow fairseq's recipes and differ, e.g. mask_time_prob).
HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout": 0.1,
    "activation_dropout": 0.1,
    "attention_dropout": 0.1,
    "feat_proj_dropout": 0.0,
    "feat_quantizer_dropout": 0.0,
    "final_dropout": 0.1,
    "layerdrop": 0.1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-5,
    "feat_extract_norm": "group",
    "feat_extract_activation": "gelu",
    "conv_dim": (512,) * 7,
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "conv_bias": False,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "do_stable_layer_norm": False,
    "apply_spec_augment": True,
    "mask_time_prob": 0.05,
    "mask_time_length": 10,
    "mask_time_min_masks": 2,
    "mask_feature_prob": 0.0,
    "mask_feature_length": 10,
    "mask_feature_min_masks": 0,
    "num_codevectors_per_group": 320,
    "num_codevector_groups": 2,
    "contrastive_logits_temperature": 0.1,
    "num_negatives": 100,
    "codevector_dim": 256,
    "proj_codevector_dim": 256,
    "diversity_loss_weight": 0.1,
    "ctc_loss_reduction": "sum",
    "ctc_zero_infinity": False,
    "use_weighted_layer_sum": False,
    "classifier_proj_size": 256,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "add_adapter": False,
    "num_adapter_layers": 3,
    "adapter_kernel_size": 3,
    "adapter_stride": 2,
    "output_hidden_size": None,  # HF: None means hidden_size
    "adapter_attn_dim": None,
    "num_labels": 2,
}

# Fields of our config that HF does not have (or, for `dtype`, has with another meaning: HF's
# `dtype` is the torch dtype of the stored weights, ours the compute dtype). They travel in
# config.json under this key so that Orbax -> HF -> Orbax restores the config exactly.
OURS_ONLY_KEY = "xlsr_jax"
OURS_ONLY_FIELDS = ("feature_penalty_weight", "feature_grad_mult", "dtype", "scan_layers", "remat", "attention_impl")

# Activations our model implements (HF ACT2FN names).
SUPPORTED_ACTIVATIONS = ("gelu",)

_OUR_FIELDS = tuple(f.name for f in dataclasses.fields(Wav2Vec2Config))
HF_SHARED_FIELDS = tuple(f for f in _OUR_FIELDS if f not in OURS_ONLY_FIELDS)

# HF fields that are not architecture but must survive a round trip (token ids, label names).
HF_PASSTHROUGH_FIELDS = (
    "bos_token_id",
    "eos_token_id",
    "id2label",
    "label2id",
    "ctc_loss_reduction",
    "ctc_zero_infinity",
    "initializer_range",
)


class ConfigError(ValueError):
    """A config that does not describe a model this project can build."""


# Sizes a config may declare, and the largest of each that is not absurd: checked before any
# table or array is built from them (a config.json with num_hidden_layers=10000000 would
# otherwise build a 10M-layer parameter table for minutes). The caps are far above every
# published model (XLS-R 2B: 48 layers, width 1920, 7 conv layers, vocabularies of a few
# thousand characters) and still cheap to tabulate.
_SIZE_LIMITS = {
    "hidden_size": 65536,
    "num_hidden_layers": 1024,
    "num_attention_heads": 4096,
    "intermediate_size": 262144,
    "num_conv_pos_embeddings": 4096,
    "num_conv_pos_embedding_groups": 65536,
    "num_codevector_groups": 1024,
    "num_codevectors_per_group": 65536,
    "codevector_dim": 65536,
    "proj_codevector_dim": 65536,
    "vocab_size": 1 << 20,
    "num_labels": 1 << 20,
    "classifier_proj_size": 65536,
}
_NON_NEGATIVE_INTS = (
    "mask_time_length",
    "mask_time_min_masks",
    "mask_feature_length",
    "mask_feature_min_masks",
    "num_negatives",
    "pad_token_id",
)
_PROBABILITIES = (
    "hidden_dropout",
    "attention_dropout",
    "activation_dropout",
    "feat_proj_dropout",
    "feat_quantizer_dropout",
    "final_dropout",
    "layerdrop",
    "mask_time_prob",
    "mask_feature_prob",
)
_POSITIVE_FLOATS = ("layer_norm_eps", "contrastive_logits_temperature")
_MAX_CONV_LAYERS = 64
# String fields with a fixed set of values (the model's own checks cover dtype and remat).
_CHOICES = {"feat_extract_norm": ("group", "layer"), "attention_impl": ("auto", "xla", "cudnn")}


def check_field_types(values: Mapping[str, Any]) -> None:
    """Checks the type and range of every config field that is given (names as Wav2Vec2Config).

    Raises:
      ConfigError naming the first bad field, what it must be and what it is.
    """
    types = {f.name: f.type for f in dataclasses.fields(Wav2Vec2Config)}
    for name, value in values.items():
        kind = str(types.get(name, ""))
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            if name in _SIZE_LIMITS and not 1 <= value <= _SIZE_LIMITS[name]:
                raise ConfigError(f"{name} must be in [1, {_SIZE_LIMITS[name]}], got {value}")
            if name in _NON_NEGATIVE_INTS and value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if name in _PROBABILITIES and not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {value}")
            if name in _POSITIVE_FLOATS and not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        elif kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, got {value!r}")
        elif kind == "str":
            if not isinstance(value, str):
                raise ConfigError(f"{name} must be a string, got {value!r}")
            if name in _CHOICES and value not in _CHOICES[name]:
                raise ConfigError(f"{name} must be one of {_CHOICES[name]}, got {value!r}")
        elif kind.startswith("tuple"):
            if (
                not isinstance(value, (list, tuple))
                or not 1 <= len(value) <= _MAX_CONV_LAYERS
                or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65536 for v in value)
            ):
                raise ConfigError(
                    f"{name} must be a list of 1 to {_MAX_CONV_LAYERS} integers in [1, 65536], got {value!r}"
                )


def _architecture(hf: Mapping[str, Any]) -> str:
    archs = hf.get("architectures")
    if archs is None:
        return "Wav2Vec2ForPreTraining"
    if not isinstance(archs, list) or not archs or not all(isinstance(a, str) for a in archs):
        raise ConfigError(f'architectures must be a list of class names, e.g. ["Wav2Vec2ForCTC"], got {archs!r}')
    if archs[0] not in ARCHITECTURES:
        raise ConfigError(f"architectures: unsupported architecture {archs[0]!r}; expected one of {ARCHITECTURES}")
    return archs[0]


def hf_to_config(hf: Mapping[str, Any], **overrides: Any) -> tuple[Wav2Vec2Config, str, dict]:
    """Maps a HF `config.json` dict to our config.

    Args:
      hf: the parsed `config.json` (fields absent from it take HF's class defaults).
      **overrides: our-config fields to set on top (e.g. scan_layers=True, dtype="bfloat16").

    Returns:
      (config, architecture, extras): architecture is the HF class name from `architectures`
      (default `Wav2Vec2ForPreTraining`); extras holds HF fields we do not model but keep for the
      way back (token ids, label maps).
    """
    if not isinstance(hf, Mapping):
        raise ConfigError(f"expected a JSON object of config fields, got {type(hf).__name__}")
    if hf.get("model_type", "wav2vec2") != "wav2vec2":
        raise ConfigError(
            f"expected a wav2vec2 config.json (model_type 'wav2vec2'), got model_type={hf.get('model_type')!r}"
        )
    arch = _architecture(hf)
    ours_only = hf.get(OURS_ONLY_KEY) or {}
    if not isinstance(ours_only, Mapping):
        raise ConfigError(f"{OURS_ONLY_KEY} must be an object of fields, got {ours_only!r}")
    for name in ("id2label", "label2id"):
        if name in hf and not isinstance(hf[name], Mapping):
            raise ConfigError(f"{name} must be an object, got {hf[name]!r}")
    check_field_types({k: v for k, v in hf.items() if k in HF_SHARED_FIELDS})
    check_field_types({k: v for k, v in ours_only.items() if k in OURS_ONLY_FIELDS})
    full = {**HF_DEFAULTS, **hf}
    if full.get("output_hidden_size") == full["hidden_size"]:
        full["output_hidden_size"] = None  # HF stores the resolved width; None is ours for "same"
    if full.get("adapter_attn_dim") is not None:
        raise ConfigError("adapter_attn_dim is set (MMS attention adapters), not supported")
    if not full.get("apply_spec_augment", True):
        # HF skips masking entirely; the equivalent here is zero masking probabilities.
        full["mask_time_prob"] = 0.0
        full["mask_feature_prob"] = 0.0
    for name in ("hidden_act", "feat_extract_activation"):
        if full[name] not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(f"{name}={full[name]!r} is not supported ({SUPPORTED_ACTIVATIONS})")
    if "num_labels" not in hf and "id2label" in hf:
        full["num_labels"] = len(hf["id2label"])
    values = {k: full[k] for k in HF_SHARED_FIELDS if k in full}
    values.update({k: v for k, v in ours_only.items() if k in OURS_ONLY_FIELDS})
    values.update(overrides)
    try:
        config = Wav2Vec2Config.from_dict(values)
    except ValueError as e:  # cross-field rules (divisibility, equal conv lengths)
        raise ConfigError(str(e)) from None
    extras = {k: full[k] for k in HF_PASSTHROUGH_FIELDS if k in full}
    return config, arch, extras


def config_to_hf(config: Wav2Vec2Config, architecture: str, extras: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Our config -> a complete HF `config.json` dict for `architecture`.

    Every HF field is written explicitly (not as a diff), so the file does not depend on the
    reading library's defaults.
    """
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"unsupported architecture {architecture!r}; expected one of {ARCHITECTURES}")
    ours = config.to_dict()
    out: dict[str, Any] = {k: v for k, v in HF_DEFAULTS.items()}
    out.update({k: ours[k] for k in HF_SHARED_FIELDS})
    out.update(dict(extras or {}))
    for key in ("conv_dim", "conv_stride", "conv_kernel"):
        out[key] = list(out[key])
    out["num_feat_extract_layers"] = len(config.conv_dim)
    out["output_hidden_size"] = config.adapter_hidden_size
    out["apply_spec_augment"] = True
    if "id2label" in out:
        out["id2label"] = {str(k): v for k, v in out["id2label"].items()}
    out["model_type"] = "wav2vec2"
    out["architectures"] = [architecture]
    out[OURS_ONLY_KEY] = {k: ours[k] for k in OURS_ONLY_FIELDS}
    return out


# --------------------------------------------------------------------------- fairseq

# fairseq `Wav2Vec2Config` defaults (fairseq/models/wav2vec/wav2vec2.py), for the fields we read;
# used when a checkpoint's cfg/args lacks a field (older fairseq versions).
FAIRSEQ_DEFAULTS: dict[str, Any] = {
    "extractor_mode": "default",
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_type": "transformer",
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "dropout_features": 0.0,
    "final_dim": 0,
    "layer_norm_first": False,
    "conv_feature_layers": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]",
    "conv_bias": False,
    "logit_temp": 0.1,
    "quantize_targets": False,
    "quantize_input": False,
    "target_glu": False,
    "feature_grad_mult": 1.0,
    "latent_vars": 320,
    "latent_groups": 2,
    "latent_dim": 0,
    "mask_length": 10,
    "mask_prob": 0.65,
    "mask_channel_prob": 0.0,
    "mask_channel_length": 10,
    "num_negatives": 100,
    "negatives_from_everywhere": False,
    "cross_sample_negatives": 0,
    "codebook_negatives": 0,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "pos_conv_depth": 1,
    "quantizer_depth": 1,
}

# fairseq field -> HF field, where the meaning is the same and only the name differs.
FAIRSEQ_TO_HF_RENAMES: dict[str, str] = {
    "encoder_layers": "num_hidden_layers",
    "encoder_embed_dim": "hidden_size",
    "encoder_ffn_embed_dim": "intermediate_size",
    "encoder_attention_heads": "num_attention_heads",
    "activation_fn": "hidden_act",
    "dropout": "hidden_dropout",
    "attention_dropout": "attention_dropout",
    "activation_dropout": "activation_dropout",
    "encoder_layerdrop": "layerdrop",
    "dropout_input": "feat_proj_dropout",
    "dropout_features": "feat_quantizer_dropout",
    "layer_norm_first": "do_stable_layer_norm",
    "conv_bias": "conv_bias",
    "logit_temp": "contrastive_logits_temperature",
    "latent_vars": "num_codevectors_per_group",
    "latent_groups": "num_codevector_groups",
    "mask_prob": "mask_time_prob",
    "mask_length": "mask_time_length",
    "mask_channel_prob": "mask_feature_prob",
    "mask_channel_length": "mask_feature_length",
    "num_negatives": "num_negatives",
    "conv_pos": "num_conv_pos_embeddings",
    "conv_pos_groups": "num_conv_pos_embedding_groups",
}

# Fine-tuning (wav2vec2_asr.py, `Wav2Vec2AsrConfig`) fields that override the pretrained
# model's, as fairseq's `Wav2VecEncoder` does with `arg_overrides`.
FAIRSEQ_FINETUNE_OVERRIDES: dict[str, str] = {
    "dropout": "dropout",
    "activation_dropout": "activation_dropout",
    "dropout_input": "dropout_input",
    "attention_dropout": "attention_dropout",
    "mask_length": "mask_length",
    "mask_prob": "mask_prob",
    "mask_channel_length": "mask_channel_length",
    "mask_channel_prob": "mask_channel_prob",
    "layerdrop": "encoder_layerdrop",
    "feature_grad_mult": "feature_grad_mult",
}

_EXTRACTOR_MODES = {"default": "group", "layer_norm": "layer"}


def parse_conv_feature_layers(spec: str) -> list[tuple[int, int, int]]:
    """Parses fairseq's `conv_feature_layers` string without `eval`.

    The string is a Python expression of lists of (dim, kernel, stride) tuples joined by `+` and
    repeated by `*`; only those constructs and integer literals are accepted.
    """

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = ev(node.left), ev(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ConfigError(f"conv_feature_layers: unsupported syntax {ast.dump(node)[:80]} in {spec!r}")

    layers = ev(ast.parse(spec, mode="eval"))
    if not isinstance(layers, list) or not all(
        isinstance(t, tuple) and len(t) == 3 and all(isinstance(v, int) for v in t) for t in layers
    ):
        raise ConfigError(f"conv_feature_layers must be a list of (dim, kernel, stride): {spec!r}")
    return layers


def fairseq_model_cfg(cfg: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
    """Finds the pretraining model's fields in a fairseq checkpoint config.

    Args:
      cfg: the checkpoint's `cfg` dict (keys `model`, `criterion`, ...) or, for old checkpoints,
        `vars(args)` (one flat namespace, wrapped here as {"model": ..., "criterion": ...}).

    Returns:
      (w2v_fields, finetune_fields_or_None, is_ctc): for a CTC fine-tuned checkpoint the
      pretrained model's fields come from `w2v_args` and the fine-tuning fields override them.
    """
    model = dict(cfg.get("model") or {})
    name = model.get("_name") or model.get("arch") or ""
    if "w2v_args" in model or name.startswith("wav2vec_ctc") or name == "wav2vec_seq2seq":
        if name == "wav2vec_seq2seq" or str(name).startswith("wav2vec_seq2seq"):
            raise ConfigError("fairseq seq2seq (decoder) checkpoints are not supported, only CTC")
        w2v = model.get("w2v_args")
        if w2v is None:
            raise ConfigError(
                "this fine-tuned checkpoint does not embed its pretraining config (w2v_args is "
                f"None; it points to w2v_path={model.get('w2v_path')!r}); cannot infer the architecture"
            )
        w2v = dict(w2v)
        inner = dict(w2v.get("model") or w2v)  # hydra: {'model': {...}}; args: flat namespace
        return inner, model, True
    if name and name not in ("wav2vec2",):
        raise ConfigError(f"unsupported fairseq model {name!r}; expected 'wav2vec2' or 'wav2vec_ctc'")
    return model, None, False


def fairseq_to_hf_config(
    cfg: Mapping[str, Any], state_keys: set[str] | None = None, vocab_size: int | None = None
) -> dict[str, Any]:
    """Maps a fairseq checkpoint config to a HF-style `config.json` dict.

    Args:
      cfg: as for `fairseq_model_cfg`.
      state_keys: the checkpoint's state-dict keys, used to check what the config implies.
      vocab_size: CTC output size (rows of `w2v_encoder.proj.weight`), for fine-tuned models.

    Returns:
      A HF config dict (with `architectures` set to Wav2Vec2ForPreTraining or Wav2Vec2ForCTC and
      our-only fields under "xlsr_jax").
    """
    w2v, finetune, is_ctc = fairseq_model_cfg(cfg)
    m = {**FAIRSEQ_DEFAULTS, **w2v}
    if finetune is not None:
        for ft_name, w2v_name in FAIRSEQ_FINETUNE_OVERRIDES.items():
            if ft_name in finetune and finetune[ft_name] is not None:
                m[w2v_name] = finetune[ft_name]
    unsupported = {
        "layer_type": (m.get("layer_type", "transformer"), "transformer"),
        "pos_conv_depth": (m.get("pos_conv_depth", 1), 1),
        "quantize_input": (m["quantize_input"], False),
        "target_glu": (m["target_glu"], False),
        "negatives_from_everywhere": (m["negatives_from_everywhere"], False),
        "codebook_negatives": (m["codebook_negatives"], 0),
        "cross_sample_negatives": (m["cross_sample_negatives"], 0),
        "quantizer_depth": (m.get("quantizer_depth", 1), 1),
    }
    bad = {k: v for k, (v, want) in unsupported.items() if v != want}
    if bad:
        raise ConfigError(f"fairseq model options not supported by this implementation: {bad}")
    if not is_ctc and not m["quantize_targets"]:
        raise ConfigError(
            "fairseq pretraining model without quantize_targets: no Gumbel quantizer "
            "to convert (only the quantized-target wav2vec 2.0 model is supported)"
        )
    if m["extractor_mode"] not in _EXTRACTOR_MODES:
        raise ConfigError(f"unknown extractor_mode {m['extractor_mode']!r}; expected {list(_EXTRACTOR_MODES)}")
    layers = parse_conv_feature_layers(m["conv_feature_layers"])
    hf: dict[str, Any] = {v: m[k] for k, v in FAIRSEQ_TO_HF_RENAMES.items()}
    hf["feat_extract_norm"] = _EXTRACTOR_MODES[m["extractor_mode"]]
    hf["feat_extract_activation"] = "gelu"  # fairseq's conv blocks hard-code nn.GELU
    hf["conv_dim"] = [d for d, _, _ in layers]
    hf["conv_kernel"] = [k for _, k, _ in layers]
    hf["conv_stride"] = [s for _, _, s in layers]
    hf["layer_norm_eps"] = 1e-5  # fairseq LayerNorm / Fp32GroupNorm default
    final_dim = m["final_dim"] if m["final_dim"] > 0 else m["encoder_embed_dim"]
    hf["proj_codevector_dim"] = final_dim
    hf["codevector_dim"] = m["latent_dim"] if m["latent_dim"] > 0 else final_dim
    hf["mask_time_min_masks"] = 2  # fairseq apply_mask passes min_masks=2
    criterion = dict(cfg.get("criterion") or {})
    weights = criterion.get("loss_weights")
    ours_only: dict[str, Any] = {"feature_grad_mult": float(m["feature_grad_mult"])}
    if weights:
        hf["diversity_loss_weight"] = float(weights[0])
        ours_only["feature_penalty_weight"] = float(weights[1]) if len(weights) > 1 else 0.0
    if finetune is not None:
        hf["final_dropout"] = float(finetune.get("final_dropout", 0.0) or 0.0)
    if is_ctc:
        if vocab_size is None:
            raise ConfigError("CTC checkpoint: vocab_size (rows of w2v_encoder.proj.weight) is needed")
        hf["vocab_size"] = int(vocab_size)
        # fairseq's CTC blank is the dictionary's bos (<s>, index 0); HF calls the blank
        # pad_token_id and swaps the <s>/<pad> names (HF's converter does the same).
        hf["pad_token_id"], hf["bos_token_id"], hf["eos_token_id"] = 0, 1, 2
    hf["architectures"] = ["Wav2Vec2ForCTC" if is_ctc else "Wav2Vec2ForPreTraining"]
    hf["model_type"] = "wav2vec2"
    hf[OURS_ONLY_KEY] = ours_only
    if state_keys is not None:
        _check_fairseq_keys_match(hf, m, state_keys, is_ctc)
    return hf


def _check_fairseq_keys_match(hf: dict, m: dict, keys: set[str], is_ctc: bool) -> None:
    prefix = "w2v_encoder.w2v_model." if is_ctc else ""
    n_layers = 1 + max(
        (int(k[len(prefix) :].split(".")[2]) for k in keys if k.startswith(prefix + "encoder.layers.")), default=-1
    )
    if n_layers != hf["num_hidden_layers"]:
        raise ConfigError(
            f"config says {hf['num_hidden_layers']} Transformer layers but the "
            f"state dict has {n_layers} (keys {prefix}encoder.layers.N.*)"
        )
    n_conv = 1 + max(
        (int(k[len(prefix) :].split(".")[2]) for k in keys if k.startswith(prefix + "feature_extractor.conv_layers.")),
        default=-1,
    )
    if n_conv != len(hf["conv_dim"]):
        raise ConfigError(f"config says {len(hf['conv_dim'])} conv layers but the state dict has {n_conv}")
