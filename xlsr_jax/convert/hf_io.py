"""Reading and writing Hugging Face model folders without torch (safetensors via numpy).

Reading `pytorch_model.bin` needs torch (loaded through `torch_pickle`, never executing
pickled code); reading or writing `model.safetensors` does not.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from xlsr_jax.constants import SAMPLE_RATE

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"
CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
GENERATION = "generation_config.json"
# The tokenizer of a translation model (MBart50Tokenizer: sentencepiece.bpe.model + JSON), carried
# verbatim between a transformers folder and our checkpoint.
TOKENIZER_FILES = (
    "sentencepiece.bpe.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "added_tokens.json",
)
# transformers >= 4.4x `ProcessorMixin.save_pretrained` (the default in 5) nests the feature
# extractor's settings here under "feature_extractor" (or "audio_processor"), and
# `FeatureExtractionMixin.get_feature_extractor_dict` reads them from here *before*
# preprocessor_config.json.
PROCESSOR = "processor_config.json"
PROCESSOR_KEYS = ("feature_extractor", "audio_processor")
# `Wav2Vec2FeatureExtractor.__init__` defaults: what transformers uses for a key its file lacks.
FEATURE_EXTRACTOR_DEFAULTS = {"feature_size": 1, "sampling_rate": 16000, "padding_value": 0.0, "do_normalize": True}

log = logging.getLogger(__name__)


# A hub model id: "name" or "owner/name" (huggingface_hub's repo id characters).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_hf_source(source: str | os.PathLike, revision: str | None = None) -> str:
    """A local transformers folder as is, or a hub model id downloaded into the hub cache.

    Hub ids (`facebook/wav2vec2-xls-r-300m`) go through `huggingface_hub.snapshot_download` (its
    cache, `HF_HOME`, token and `HF_HUB_OFFLINE` apply): the JSON files and safetensors weights,
    or `pytorch_model.bin*` when the repository has no safetensors.

    Raises:
      FileNotFoundError: neither a folder nor a downloadable id (one line with the reason, e.g.
        offline with nothing cached).
    """
    source = os.fspath(source)
    if os.path.isdir(source) or os.path.exists(source) or not _HUB_ID.match(source):
        return source
    try:
        import huggingface_hub
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise FileNotFoundError(f"{source}: no such folder (hub ids need huggingface_hub)") from e
    try:
        fetch = huggingface_hub.snapshot_download
        folder = fetch(source, revision=revision, allow_patterns=["*.json", "*.safetensors"])
        if not any(os.path.isfile(os.path.join(folder, f)) for f in (SAFETENSORS, SAFETENSORS_INDEX)):
            folder = fetch(source, revision=revision, allow_patterns=["*.json", "pytorch_model.bin*"])
    except Exception as e:  # huggingface_hub raises its own HTTP/offline/repository errors
        reason = (str(e).strip().splitlines() or [""])[0]
        raise FileNotFoundError(
            f"{source}: not a local folder, and the hub download failed ({type(e).__name__}: {reason}); "
            "check the id and revision, or the network (HF_HUB_OFFLINE=1 uses only the cache)"
        ) from e
    return folder


def read_hf_config(folder: str | os.PathLike) -> dict[str, Any]:
    """Parses `folder/config.json`, with a clear error when it is absent."""
    path = os.path.join(os.fspath(folder), CONFIG)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{folder!s}: no {CONFIG}; expected a transformers Wav2Vec2 model folder "
            f"({CONFIG} + {SAFETENSORS} or {TORCH_BIN})"
        )
    config = read_json(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object of config fields, got a {type(config).__name__}")
    return config


def read_json(path: str) -> Any:
    """Parses a JSON file; a malformed one raises ValueError naming the file and the position."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def read_audio_settings(
    folder: str | os.PathLike, *, needed: bool, explicit: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The feature extractor's `sampling_rate` and `do_normalize`, read as transformers reads them.

    Sources, in transformers' order: `processor_config.json` ["feature_extractor"] (or
    ["audio_processor"]), else `preprocessor_config.json`; a key the chosen source lacks takes
    `Wav2Vec2FeatureExtractor`'s default (what transformers does), and that is logged. `explicit`
    values (the CLI's --sampling_rate / --do_normalize) win over the files, with a warning where
    they differ.

    Args:
      folder: the transformers model folder.
      needed: the settings change the model's outputs as used here (a CTC or classification
        head transcribes/identifies raw audio); without any source they must then be explicit.
    Returns:
      {"sampling_rate": int Hz, "do_normalize": bool}, or {} when nothing states them and
      `needed` is False (the caller applies its documented convention).
    Raises:
      ValueError naming the file and field: invalid JSON, a non-dict section, a sampling_rate that
      is not a positive integer, a do_normalize that is not a boolean, feature_size other than 1,
      or (`needed`) no source and no explicit value.
    """
    folder = os.fspath(folder)
    explicit = {k: v for k, v in dict(explicit or {}).items() if v is not None}
    settings, source = None, None
    proc_path = os.path.join(folder, PROCESSOR)
    if os.path.isfile(proc_path):
        proc = read_json(proc_path)
        if not isinstance(proc, dict):
            raise ValueError(f"{proc_path}: expected a JSON object, got {type(proc).__name__}")
        key = next((k for k in PROCESSOR_KEYS if k in proc), None)
        if key is not None:
            settings, source = proc[key], f"{proc_path} [{key!r}]"
    pre_path = os.path.join(folder, PREPROCESSOR)
    if os.path.isfile(pre_path):
        pre = read_json(pre_path)
        if settings is None:
            settings, source = pre, pre_path
        elif isinstance(pre, dict) and isinstance(settings, dict):
            differ = [k for k in ("sampling_rate", "do_normalize") if k in pre and pre[k] != settings.get(k, pre[k])]
            if differ:
                log.warning(
                    "%s and %s disagree on %s; using %s, as transformers does",
                    source,
                    pre_path,
                    ", ".join(differ),
                    source,
                )
    if settings is None:
        missing = [k for k in ("sampling_rate", "do_normalize") if k not in explicit]
        if missing and needed:
            raise ValueError(
                f"{folder}: no feature-extractor settings ({PREPROCESSOR}, or {PROCESSOR} with a "
                f"'feature_extractor' section) and this model's outputs depend on {' and '.join(missing)}; "
                "state them with --sampling_rate HZ --do_normalize true|false (the values the model was "
                "trained with)"
            )
        return {k: explicit[k] for k in ("sampling_rate", "do_normalize") if k in explicit}
    if not isinstance(settings, dict):
        raise ValueError(
            f"{source}: expected a JSON object of feature-extractor settings, got {type(settings).__name__}"
        )
    out = {}
    for key in ("sampling_rate", "do_normalize", "feature_size"):
        if key in settings:
            out[key] = settings[key]
        else:
            out[key] = FEATURE_EXTRACTOR_DEFAULTS[key]
            if key not in explicit and key != "feature_size":
                log.info("%s has no %s: assuming transformers' default %r", source, key, out[key])
    rate = out["sampling_rate"]
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise ValueError(f"{source}: sampling_rate must be a positive integer (Hz), got {rate!r}")
    if not isinstance(out["do_normalize"], bool):
        raise ValueError(f"{source}: do_normalize must be true or false, got {out['do_normalize']!r}")
    if out.pop("feature_size") != 1:
        raise ValueError(f"{source}: feature_size must be 1 (raw waveform input), got {settings['feature_size']!r}")
    for key, value in explicit.items():
        if value != out[key]:
            log.warning("%s says %s=%r; using the explicit %r", source, key, out[key], value)
        out[key] = value
    log.info("audio settings from %s: %s", source, out)
    return out


def to_numpy_float32(name: str, value: Any) -> np.ndarray:
    """A float tensor (torch, numpy, bfloat16) as a float32 numpy array; `name` is for the error.

    Raises:
      ValueError: the tensor is not floating point.
    """
    if hasattr(value, "detach"):  # torch tensor
        import torch

        return value.detach().to(torch.float32).cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind != "f" and arr.dtype.name != "bfloat16":
        raise ValueError(f"tensor {name} has non-float dtype {arr.dtype}")
    return arr.astype(np.float32)


def read_hf_state(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """Loads all weights of a HF folder as float32 numpy arrays (sharded files included)."""
    folder = os.fspath(folder)
    files: list[str]
    if os.path.isfile(os.path.join(folder, SAFETENSORS)):
        files = [SAFETENSORS]
    elif os.path.isfile(os.path.join(folder, SAFETENSORS_INDEX)):
        files = _shard_files(folder, SAFETENSORS_INDEX, ".safetensors")
    elif os.path.isfile(os.path.join(folder, TORCH_BIN)):
        files = [TORCH_BIN]
    elif os.path.isfile(os.path.join(folder, TORCH_BIN_INDEX)):
        files = _shard_files(folder, TORCH_BIN_INDEX, ".bin")
    else:
        raise FileNotFoundError(
            f"{folder}: no weights; expected {SAFETENSORS}, {SAFETENSORS_INDEX}, {TORCH_BIN} or {TORCH_BIN_INDEX}"
        )
    state: dict[str, np.ndarray] = {}
    for name in files:
        path = os.path.join(folder, name)
        if name.endswith(".safetensors"):
            from safetensors import safe_open

            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: listed in the weight index but missing")
            # framework="np" reads without torch; bf16 arrives as ml_dtypes.bfloat16. The library
            # checks the header against the file size; its errors do not name the file.
            try:
                with safe_open(path, framework="np") as f:
                    for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                        state[key] = to_numpy_float32(key, f.get_tensor(key))
            except (OSError, ValueError, TypeError) as e:
                raise ValueError(f"{path}: not a valid safetensors file ({e})") from None
            except Exception as e:  # safetensors_rust.SafetensorError derives from Exception only
                if type(e).__name__ != "SafetensorError":
                    raise
                raise ValueError(f"{path}: not a valid safetensors file ({e})") from None
        else:
            from xlsr_jax.convert.torch_pickle import load_torch_file

            loaded = load_torch_file(path)
            if not isinstance(loaded, Mapping):
                raise ValueError(f"{path}: expected a state dict, got {type(loaded).__name__}")
            for key, value in loaded.items():
                state[key] = to_numpy_float32(key, value)
    return state


def _shard_files(folder: str, index_name: str, suffix: str) -> list[str]:
    """The shard file names of a sharded checkpoint's index, checked to be plain names of
    `suffix` files inside `folder` (a hostile index must not point elsewhere)."""
    path = os.path.join(folder, index_name)
    index = read_json(path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{path}: weight_map must be a non-empty object {{tensor name: shard file}}")
    files = set(weight_map.values())
    for name in files:
        if not isinstance(name, str) or os.path.basename(name) != name or not name.endswith(suffix):
            raise ValueError(f"{path}: weight_map: shard {name!r} is not a {suffix} file name in the folder")
    return sorted(files)


def preprocessor_config(
    sampling_rate: int = SAMPLE_RATE, do_normalize: bool = True, return_attention_mask: bool = True
) -> dict[str, Any]:
    """`preprocessor_config.json` for `Wav2Vec2FeatureExtractor`.

    HF's convention: models with the group-norm extractor are run without an attention mask
    (their GroupNorm sees padding anyway, and they were trained on unpadded crops), so their
    feature extractor sets return_attention_mask=False; layer-norm models use the mask.
    """
    return {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "padding_side": "right",
        "padding_value": 0.0,
        "do_normalize": bool(do_normalize),
        "return_attention_mask": bool(return_attention_mask),
        "sampling_rate": int(sampling_rate),
        "processor_class": "Wav2Vec2Processor",
    }


TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
# The tokenizer_config.json fields that change a CTC transcript (decoding.CTCLabels reads them).
TOKENIZER_FIELDS = (
    "pad_token",
    "unk_token",
    "bos_token",
    "eos_token",
    "word_delimiter_token",
    "do_lower_case",
    "additional_special_tokens",
)


def read_tokenizer_settings(folder: str | os.PathLike) -> dict[str, Any]:
    """The tokenizer fields of a transformers folder (special_tokens_map.json, then
    tokenizer_config.json over it, as `from_pretrained` reads them); {} when neither exists.
    AddedToken dicts are reduced to their `content`; an explicit null is kept (token absent)."""
    settings: dict[str, Any] = {}
    for name in (SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG):
        path = os.path.join(os.fspath(folder), name)
        if not os.path.isfile(path):
            continue
        data = read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
        for key in TOKENIZER_FIELDS:
            if key in data:
                value = data[key]
                settings[key] = value.get("content") if isinstance(value, Mapping) else value
    return settings


def read_ctc_vocab(folder: str | os.PathLike) -> dict[str, Any] | None:
    """vocab.json plus the tokenizer's added tokens ({token: id}), as `Wav2Vec2CTCTokenizer` ids
    them: `added_tokens.json` and tokenizer_config.json's `added_tokens_decoder` give tokens
    outside vocab.json (e.g. `<s>`/`</s>` appended after `[PAD]` by the XLS-R fine-tuning blog's
    recipe). None when there is no vocab.json; a nested (per-language) vocab is returned as is."""
    folder = os.fspath(folder)
    path = os.path.join(folder, "vocab.json")
    if not os.path.isfile(path):
        return None
    vocab = read_json(path)
    if not isinstance(vocab, dict):
        raise ValueError(f"{path}: expected a JSON object {{token: id}}, got {type(vocab).__name__}")
    if not all(isinstance(i, int) for i in vocab.values()):
        return vocab
    added: dict[str, int] = {}
    added_path = os.path.join(folder, "added_tokens.json")
    if os.path.isfile(added_path):
        extra = read_json(added_path)
        if not isinstance(extra, dict):
            raise ValueError(f"{added_path}: expected a JSON object {{token: id}}, got {type(extra).__name__}")
        added.update(extra)
    config_path = os.path.join(folder, TOKENIZER_CONFIG)
    if os.path.isfile(config_path):
        tokenizer_config = read_json(config_path)
        if not isinstance(tokenizer_config, dict):
            raise ValueError(f"{config_path}: expected a JSON object, got {type(tokenizer_config).__name__}")
        decoder = tokenizer_config.get("added_tokens_decoder") or {}
        added.update({entry["content"]: int(i) for i, entry in decoder.items()})
    for token, i in sorted(added.items(), key=lambda kv: kv[1]):
        if token not in vocab:
            vocab[token] = int(i)
    return vocab


def ctc_tokenizer_files(
    vocab: Mapping[str, int], pad_token_id: int, tokenizer: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """vocab.json, tokenizer_config.json and special_tokens_map.json for `Wav2Vec2CTCTokenizer`.

    With `tokenizer` (settings read by `read_tokenizer_settings` at conversion) those are written
    back as they were. Otherwise the CTC blank is HF's pad token, named whatever `vocab` maps to
    `pad_token_id`, and the other specials take the names our vocabularies use.
    """
    if tokenizer:
        settings = dict(tokenizer)
        tokenizer_config = {
            "tokenizer_class": "Wav2Vec2CTCTokenizer",
            "replace_word_delimiter_char": " ",
            "processor_class": "Wav2Vec2Processor",
            **settings,
        }
        special = {k: v for k, v in settings.items() if k.endswith("_token") and k != "word_delimiter_token"}
        return {
            "vocab.json": {t: int(i) for t, i in sorted(vocab.items(), key=lambda kv: kv[1])},
            "tokenizer_config.json": tokenizer_config,
            "special_tokens_map.json": special,
        }
    by_id = {int(i): t for t, i in vocab.items()}
    if len(by_id) != len(vocab):
        raise ValueError("vocab maps two tokens to the same id")
    if pad_token_id not in by_id:
        raise ValueError(f"vocab has no token with the CTC blank id {pad_token_id}")

    def pick(name, default):
        return name if name in vocab else default

    special = {
        "pad_token": by_id[pad_token_id],
        "unk_token": pick("<unk>", by_id[pad_token_id]),
        "bos_token": pick("<s>", None),
        "eos_token": pick("</s>", None),
    }
    special = {k: v for k, v in special.items() if v is not None}
    tokenizer_config = {
        "tokenizer_class": "Wav2Vec2CTCTokenizer",
        "word_delimiter_token": "|" if "|" in vocab else " ",
        "replace_word_delimiter_char": " ",
        "do_lower_case": False,
        "processor_class": "Wav2Vec2Processor",
        **special,
    }
    return {
        "vocab.json": {t: int(i) for t, i in sorted(vocab.items(), key=lambda kv: kv[1])},
        "tokenizer_config.json": tokenizer_config,
        "special_tokens_map.json": special,
    }


def write_hf_folder(
    out: str | os.PathLike,
    config: Mapping[str, Any],
    state: Mapping[str, np.ndarray],
    *,
    json_files: Mapping[str, Any] | None = None,
    binary_files: Mapping[str, bytes] | None = None,
    overwrite: bool = False,
) -> str:
    """Writes config.json + model.safetensors (+ other JSON files) atomically, without torch.

    Args:
      out: the folder to create.
      config: the HF config dict.
      state: HF key -> float32 numpy array.
      json_files: extra file name -> JSON object (preprocessor, tokenizer files).
      binary_files: extra file name -> bytes, written verbatim (a sentencepiece model).
      overwrite: replace an existing folder.
    Returns:
      The absolute path written.
    """
    from safetensors.numpy import save_file

    from xlsr_jax import fileio

    with fileio.atomic_dir(out, overwrite=overwrite) as tmp:
        tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
        save_file(tensors, os.path.join(tmp, SAFETENSORS), metadata={"format": "pt"})
        files = {CONFIG: dict(config), **dict(json_files or {})}
        for name, obj in files.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
                f.write("\n")
        for name, data in dict(binary_files or {}).items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
    return os.path.abspath(os.fspath(out))
