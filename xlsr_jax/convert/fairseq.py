"""fairseq wav2vec 2.0 checkpoints (`.pt`): config, weights and CTC dictionary -> HF layout.

A fairseq checkpoint is a pickled dict with `model` (the state dict) and `cfg` (hydra era: a
dict, or an omegaconf DictConfig, with `model`, `criterion`, `task`, ...) or, in older files,
`args` (one argparse Namespace). Pretraining checkpoints hold a `Wav2Vec2Model`; CTC fine-tuned
ones a `Wav2VecCtc` whose encoder sits under `w2v_encoder.w2v_model.` and whose output layer is
`w2v_encoder.proj`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from xlsr_jax.constants import SAMPLE_RATE
from xlsr_jax.convert import configs, tables
from xlsr_jax.convert.params import CheckpointMismatchError

log = logging.getLogger(__name__)

# Pretraining-only modules that CTC fine-tuning deletes (remove_pretraining_modules); some
# fine-tuned files still carry them. They are dropped when converting a CTC model.
_PRETRAINING_ONLY = re.compile(r"(quantizer\.|project_q\.|final_proj\.|target_glu\.).*")


def read_fairseq_dictionary(path: str | os.PathLike) -> dict[str, int]:
    """A fairseq `dict.ltr.txt` as a HF CTC vocab {token: id}.

    fairseq indexes <s>=0, <pad>=1, </s>=2, <unk>=3 and then the file's tokens in order; its CTC
    blank is index 0 (bos). HF's Wav2Vec2CTCTokenizer treats its pad token as the blank, so ids
    0 and 1 swap names (<pad>=0, <s>=1) as in HF's own converter; logits keep their order.
    """
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            token = line.rsplit(" ", 1)[0] if " " in line else line
            if token in vocab:
                continue
            vocab[token] = len(vocab)
    return vocab


def checkpoint_config(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint's config as a plain dict with `model` and `criterion` sections."""
    from xlsr_jax.convert.torch_pickle import to_plain

    cfg = to_plain(ckpt.get("cfg"))
    if isinstance(cfg, Mapping) and cfg.get("model") is not None:
        return resolve_interpolations(dict(cfg))
    args = to_plain(ckpt.get("args"))
    if isinstance(args, Mapping):
        # Old checkpoints: one flat namespace holds model and criterion fields alike.
        return {"model": args, "criterion": args}
    raise configs.ConfigError(
        f"fairseq checkpoint has neither `cfg` (with a `model` section) nor `args`; top-level keys: {sorted(ckpt)}"
    )


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")


def resolve_interpolations(cfg: dict[str, Any]) -> dict[str, Any]:
    """Replaces omegaconf `${a.b}` references by the values they point to, as omegaconf would on
    access (hydra-era fairseq writes e.g. `model.normalize: ${task.normalize}`). A fine-tuned
    checkpoint's `model.w2v_args` is a config of its own: its references resolve inside it.
    References that do not resolve (missing keys, resolvers like `${env:X}`) stay as they are.
    """

    def lookup(root, path, depth):
        node = root
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None, False
            node = node[part]
        return resolve(node, root, depth + 1), True

    def resolve(node, root, depth=0):
        if depth > 32:  # a reference cycle: leave the rest as written
            return node
        if isinstance(node, Mapping):
            return {
                k: resolve(v, v if k == "w2v_args" and isinstance(v, Mapping) else root, depth) for k, v in node.items()
            }
        if isinstance(node, list):
            return [resolve(v, root, depth) for v in node]
        if isinstance(node, str):
            m = _INTERPOLATION.fullmatch(node)
            if m:
                value, found = lookup(root, m.group(1), depth)
                return value if found else node
        return node

    return resolve(cfg, cfg)


def fairseq_state_to_hf(
    state: Mapping[str, np.ndarray], is_ctc: bool, hf_config: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Renames a fairseq state dict to HF keys (values unchanged).

    Raises:
      CheckpointMismatchError listing fairseq keys the table does not know.
    """
    out: dict[str, np.ndarray] = {}
    unknown = []
    for key, value in state.items():
        if is_ctc:
            if key.startswith(tables.FAIRSEQ_CTC_PREFIX):
                inner = key[len(tables.FAIRSEQ_CTC_PREFIX) :]
                if _PRETRAINING_ONLY.fullmatch(inner):
                    continue
                new = tables.rename_by_table(inner, tables.FAIRSEQ_TO_HF)
            else:
                new = tables.rename_by_table(key, tables.FAIRSEQ_CTC_HEAD)
        else:
            new = tables.rename_by_table(key, tables.FAIRSEQ_TO_HF)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointMismatchError(
            f"fairseq keys with no known HF counterpart ({len(unknown)}): {', '.join(sorted(unknown)[:20])}"
        )
    # fairseq omits post_extract_proj when the conv width already equals the model width; HF
    # always has the projection, so it becomes an exact identity.
    proj = "wav2vec2.feature_projection.projection"
    if proj + ".weight" not in out:
        width = hf_config["conv_dim"][-1]
        if width != hf_config["hidden_size"]:
            raise CheckpointMismatchError(
                f"missing post_extract_proj although conv width {width} != hidden size {hf_config['hidden_size']}"
            )
        out[proj + ".weight"] = np.eye(width, dtype=np.float32)
        out[proj + ".bias"] = np.zeros(width, np.float32)
    return out


def hf_state_to_fairseq(state: Mapping[str, np.ndarray], feat_extract_norm: str, ctc: bool) -> dict[str, np.ndarray]:
    """HF keys -> fairseq keys (the inverse table), e.g. to build fairseq-layout test files."""
    out = {}
    for key, value in state.items():
        new = tables.hf_to_fairseq_key(key, feat_extract_norm, ctc)
        if new is None:
            raise CheckpointMismatchError(f"HF key {key} has no fairseq counterpart")
        out[new] = value
    return out


def audio_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Input conventions from the checkpoint's task config (`normalize`, `sample_rate`).

    A setting the config leaves out takes fairseq's `AudioPretrainingConfig` default
    (sample_rate 16000, normalize False), as fairseq itself would; that is logged.

    Raises:
      configs.ConfigError: sample_rate is not a positive integer or normalize not a boolean.
    """
    task = cfg.get("task") or {}
    model = cfg.get("model") or {}
    normalize = task.get("normalize", model.get("normalize"))
    if normalize is None:  # fine-tuned: the pretraining task's setting
        w2v = model.get("w2v_args") or {}
        normalize = (w2v.get("task") or w2v).get("normalize")
    if normalize is None:
        log.info("fairseq cfg has no task.normalize: fairseq's default False")
        normalize = False
    rate = task.get("sample_rate")
    if rate is None:
        log.info("fairseq cfg has no task.sample_rate: fairseq's default %d", SAMPLE_RATE)
        rate = SAMPLE_RATE
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise configs.ConfigError(f"task.sample_rate must be a positive integer (Hz), got {rate!r}")
    if not isinstance(normalize, bool):
        raise configs.ConfigError(f"task.normalize must be true or false, got {normalize!r}")
    return {"sampling_rate": rate, "do_normalize": normalize}


def read_fairseq_checkpoint(
    path: str | os.PathLike, dict_path: str | os.PathLike | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, int] | None]:
    """Loads a fairseq `.pt` safely and returns (HF config dict, HF-named float32 state, vocab).

    The HF config carries the task's audio conventions under "xlsr_jax_audio".

    Args:
      path: the checkpoint.
      dict_path: for CTC models, fairseq's `dict.ltr.txt` (the vocabulary is not stored in the
        checkpoint); without it no tokenizer files can be written later.
    """
    from xlsr_jax.convert.hf_io import to_numpy_float32
    from xlsr_jax.convert.torch_pickle import load_torch_file

    ckpt = load_torch_file(path)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
        raise configs.ConfigError(f"{path}: not a fairseq checkpoint (expected a dict with a 'model' state dict)")
    cfg = checkpoint_config(ckpt)
    state = {k: to_numpy_float32(k, v) for k, v in ckpt["model"].items()}
    _, _, is_ctc = configs.fairseq_model_cfg(cfg)
    vocab_size = None
    if is_ctc:
        if "w2v_encoder.proj.weight" not in state:
            raise CheckpointMismatchError(f"{path}: CTC checkpoint without w2v_encoder.proj.weight")
        vocab_size = state["w2v_encoder.proj.weight"].shape[0]
    hf_config = configs.fairseq_to_hf_config(cfg, set(state), vocab_size)
    hf_config["xlsr_jax_audio"] = audio_settings(cfg)
    hf_state = fairseq_state_to_hf(state, is_ctc, hf_config)
    vocab = None
    if dict_path is not None:
        vocab = read_fairseq_dictionary(dict_path)
        if is_ctc and len(vocab) != vocab_size:
            raise CheckpointMismatchError(
                f"{dict_path} gives {len(vocab)} symbols (with the 4 specials) "
                f"but the CTC layer has {vocab_size} outputs"
            )
    return hf_config, hf_state, vocab
