"""Reading and writing Hugging Face model folders without torch (safetensors via numpy).

Reading `pytorch_model.bin` needs torch (loaded through `torch_pickle`, never executing
pickled code); reading or writing `model.safetensors` does not.
"""

from __future__ import annotations

import json
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
    with open(path, encoding="utf-8") as f:
        return json.load(f)


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
        with open(os.path.join(folder, SAFETENSORS_INDEX), encoding="utf-8") as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.isfile(os.path.join(folder, TORCH_BIN)):
        files = [TORCH_BIN]
    elif os.path.isfile(os.path.join(folder, TORCH_BIN_INDEX)):
        with open(os.path.join(folder, TORCH_BIN_INDEX), encoding="utf-8") as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        raise FileNotFoundError(
            f"{folder}: no weights; expected {SAFETENSORS}, {SAFETENSORS_INDEX}, {TORCH_BIN} or {TORCH_BIN_INDEX}"
        )
    state: dict[str, np.ndarray] = {}
    for name in files:
        path = os.path.join(folder, name)
        if name.endswith(".safetensors"):
            from safetensors import safe_open

            # framework="np" reads without torch; bf16 arrives as ml_dtypes.bfloat16.
            with safe_open(path, framework="np") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                    state[key] = to_numpy_float32(key, f.get_tensor(key))
        else:
            from xlsr_jax.convert.torch_pickle import load_torch_file

            loaded = load_torch_file(path)
            if not isinstance(loaded, Mapping):
                raise ValueError(f"{path}: expected a state dict, got {type(loaded).__name__}")
            for key, value in loaded.items():
                state[key] = to_numpy_float32(key, value)
    return state


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
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
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
    with open(path, encoding="utf-8") as f:
        vocab = json.load(f)
    if not all(isinstance(i, int) for i in vocab.values()):
        return vocab
    added: dict[str, int] = {}
    added_path = os.path.join(folder, "added_tokens.json")
    if os.path.isfile(added_path):
        with open(added_path, encoding="utf-8") as f:
            added.update(json.load(f))
    config_path = os.path.join(folder, TOKENIZER_CONFIG)
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as f:
            decoder = json.load(f).get("added_tokens_decoder") or {}
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
    overwrite: bool = False,
) -> str:
    """Writes config.json + model.safetensors (+ other JSON files) atomically, without torch.

    Args:
      out: the folder to create.
      config: the HF config dict.
      state: HF key -> float32 numpy array.
      json_files: extra file name -> JSON object (preprocessor, tokenizer files).
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
    return os.path.abspath(os.fspath(out))
