"""Reading and writing Hugging Face model folders without torch (safetensors via numpy).

Reading `pytorch_model.bin` needs torch (loaded through `torch_pickle`, never executing
pickled code); reading or writing `model.safetensors` does not.
"""

from __future__ import annotations

import json
import os
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


def ctc_tokenizer_files(vocab: Mapping[str, int], pad_token_id: int) -> dict[str, Any]:
    """vocab.json, tokenizer_config.json and special_tokens_map.json for `Wav2Vec2CTCTokenizer`.

    The CTC blank is HF's pad token; its name is whatever `vocab` maps to `pad_token_id`.
    """
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
