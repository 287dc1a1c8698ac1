"""Exported model checkpoints: an Orbax parameter tree plus the JSON that describes it.

Layout of a checkpoint directory (the same shape as a training checkpoint's step directory, so
`xlsr_jax.checkpointing.restore_params` reads it too):

  DIR/params/      Orbax StandardCheckpointer tree of float32 parameters (our Flax names)
  DIR/model.json   {"format": "xlsr_jax.pretrained", "version": 1,
                    "architecture": HF class name (Wav2Vec2ForPreTraining, Wav2Vec2ForCTC, ...),
                    "config": Wav2Vec2Config.to_dict(),
                    "hf_extras": HF fields we keep for the way back (token ids, label maps),
                    "vocab": {token: id} for CTC models (optional),
                    "audio": {"sampling_rate": 16000, "do_normalize": bool}}

Everything needed to rebuild the model is in the directory. `load_pretrained` also accepts a
training run's checkpoint (root, step or params directory), reading the model section of the run
config stored beside the parameters. Writes go to a temporary sibling
directory that is renamed into place at the end, so a reader never sees a half-written one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from xlsr_jax import fileio
from xlsr_jax.models.config import Wav2Vec2Config

FORMAT = "xlsr_jax.pretrained"
VERSION = 1
MODEL_JSON = "model.json"
PARAMS_DIR = "params"

MODEL_CLASSES = ("Wav2Vec2ForPreTraining", "Wav2Vec2Model", "Wav2Vec2ForCTC", "Wav2Vec2ForSequenceClassification")


@dataclasses.dataclass
class Pretrained:
    """A loaded checkpoint: config, architecture, parameters and metadata."""

    config: Wav2Vec2Config
    architecture: str
    params: Any
    hf_extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    vocab: dict[str, int] | None = None
    audio: dict[str, Any] = dataclasses.field(default_factory=dict)

    def model(self):
        """The Flax module for this architecture (see `model_class`)."""
        return model_class(self.architecture)(self.config)


def model_class(architecture: str):
    """Our Flax module class for a HF architecture name."""
    from xlsr_jax import models

    if architecture not in MODEL_CLASSES:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {MODEL_CLASSES}")
    return getattr(models, architecture)


def default_audio_settings(config: Wav2Vec2Config) -> dict[str, Any]:
    """Input conventions of the published models: per-utterance normalisation goes with the
    layer-norm extractor (fairseq `normalize=True` for XLSR-53 / XLS-R), raw audio with group norm."""
    return {"sampling_rate": 16000, "do_normalize": config.feat_extract_norm == "layer"}


def _atomic_dir(final: str, overwrite: bool):
    final = os.path.abspath(os.fspath(final))
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f"{final} exists; pass overwrite=True (--overwrite) to replace it")
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    return final, tempfile.mkdtemp(prefix="." + os.path.basename(final) + ".tmp-", dir=parent)


def commit_dir(tmp: str, final: str) -> None:
    """Moves a finished temporary directory into place (replacing an old one)."""
    if os.path.exists(final):
        old = final + ".old-" + os.path.basename(tmp)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)


def save_pretrained(
    directory: str | os.PathLike,
    params: Any,
    config: Wav2Vec2Config,
    architecture: str,
    *,
    hf_extras: Mapping[str, Any] | None = None,
    vocab: Mapping[str, int] | None = None,
    audio: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Writes an exported checkpoint (see module docstring) atomically.

    Args:
      directory: output directory (must not exist unless `overwrite`).
      params: our parameter tree (numpy or jax arrays; stored as float32).
      config: the model config.
      architecture: one of `MODEL_CLASSES`.
      hf_extras, vocab, audio: metadata carried for conversion back to HF.
    Returns:
      The absolute path written.
    """
    import jax
    import orbax.checkpoint as ocp

    if architecture not in MODEL_CLASSES:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {MODEL_CLASSES}")
    final, tmp = _atomic_dir(directory, overwrite)
    try:
        tree = jax.tree.map(lambda x: np.asarray(x, dtype=np.float32), params)
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(os.path.join(tmp, PARAMS_DIR), tree)
            ckptr.wait_until_finished()
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "architecture": architecture,
            "config": config.to_dict(),
            "hf_extras": dict(hf_extras or {}),
            "vocab": dict(vocab) if vocab is not None else None,
            "audio": dict(audio or default_audio_settings(config)),
        }
        with open(os.path.join(tmp, MODEL_JSON), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        commit_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """Reads and validates DIR/model.json."""
    path = fileio.join(directory, MODEL_JSON)
    if not fileio.isfile(path):
        raise FileNotFoundError(
            f"{directory!s} is not an exported xlsr_jax checkpoint: expected {MODEL_JSON} and "
            f"{PARAMS_DIR}/ (write one with `python -m xlsr_jax.convert hf-to-orbax` or "
            "`xlsr_jax.pretrained.save_pretrained`)"
        )
    meta = json.loads(fileio.read_text(path))
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(
            f"{path}: expected format {FORMAT!r} version {VERSION}, got "
            f"{meta.get('format')!r} version {meta.get('version')!r}"
        )
    return meta


def load_pretrained(
    directory: str | os.PathLike, *, config_overrides: Mapping[str, Any] | None = None, abstract_params: Any = None
) -> Pretrained:
    """Loads an exported checkpoint.

    Args:
      directory: written by `save_pretrained` (or the converters).
      config_overrides: execution fields to change on load (e.g. {"scan_layers": True,
        "dtype": "bfloat16"}); `scan_layers` changes restack the Transformer layers.
      abstract_params: optional pytree of jax.ShapeDtypeStruct with target shardings; without
        it the parameters come back as host numpy arrays.
    Returns:
      `Pretrained`.
    """
    import orbax.checkpoint as ocp

    if fileio.isfile(fileio.join(directory, MODEL_JSON)):
        meta = read_metadata(directory)
        params_dir = fileio.abspath(fileio.join(directory, PARAMS_DIR))
    else:
        meta, params_dir = _training_checkpoint_metadata(directory)
    config = Wav2Vec2Config.from_dict(meta["config"])
    with ocp.StandardCheckpointer() as ckptr:
        if abstract_params is None:
            meta_tree = ckptr.metadata(params_dir)
            tree = getattr(meta_tree, "item_metadata", meta_tree)
            tree = getattr(tree, "tree", tree)
            target = _numpy_target(tree)
            params = ckptr.restore(params_dir, target)
        else:
            params = ckptr.restore(params_dir, abstract_params)
    params = _strip_boxes(params)
    if config_overrides:
        new = dataclasses.replace(config, **dict(config_overrides))
        if new.scan_layers != config.scan_layers:
            params = restack_layers(params, config, new.scan_layers)
        config = new
    return Pretrained(
        config,
        meta["architecture"],
        params,
        meta.get("hf_extras") or {},
        meta.get("vocab"),
        meta.get("audio") or default_audio_settings(config),
    )


# Trainer task names (config.task) -> the model class they train.
TASK_ARCHITECTURES = {
    "pretrain": "Wav2Vec2ForPreTraining",
    "ctc": "Wav2Vec2ForCTC",
    "lid": "Wav2Vec2ForSequenceClassification",
}


def _training_checkpoint_metadata(directory) -> tuple[dict[str, Any], str]:
    """model.json-equivalent metadata of a training run's checkpoint (root, step dir or params dir).

    The run config stored with each step (`xlsr_jax.checkpointing`) has the model section and
    the task; the architecture follows from the task, else from the parameter tree's heads.
    """
    from xlsr_jax import checkpointing

    try:
        params_dir = fileio.abspath(checkpointing._resolve_step_dir(os.fspath(directory)))
    except FileNotFoundError:
        read_metadata(directory)  # raises the exported-checkpoint error, naming both layouts
        raise
    config_file = os.path.join(os.path.dirname(params_dir), checkpointing.CONFIG, "metadata")
    if not fileio.isfile(config_file):
        raise FileNotFoundError(f"{params_dir}: training checkpoint without its config item ({config_file})")
    run = json.loads(fileio.read_text(config_file))
    if not isinstance(run.get("model"), Mapping):
        raise ValueError(f"{config_file}: run config has no `model` section")  # noqa: TRY004
    arch = TASK_ARCHITECTURES.get(run.get("task", ""))
    if arch is None:
        import orbax.checkpoint as ocp

        with ocp.StandardCheckpointer() as ckptr:
            meta_tree = ckptr.metadata(params_dir)
        tree = getattr(getattr(meta_tree, "item_metadata", meta_tree), "tree", meta_tree)
        heads = {
            "quantizer": "Wav2Vec2ForPreTraining",
            "lm_head": "Wav2Vec2ForCTC",
            "classifier": "Wav2Vec2ForSequenceClassification",
        }
        arch = next((a for k, a in heads.items() if k in tree), "Wav2Vec2Model")
    names = {f.name for f in dataclasses.fields(Wav2Vec2Config)}
    data = run.get("data") or {}
    hf_extras = {}
    languages = list(data.get("languages") or [])
    if arch == "Wav2Vec2ForSequenceClassification" and len(languages) == run["model"].get("num_labels"):
        # A language-ID run's classes are its data.languages, in id order (xlsr_jax.tasks.lid).
        hf_extras["id2label"] = {str(i): lang for i, lang in enumerate(languages)}
        hf_extras["label2id"] = {lang: i for i, lang in enumerate(languages)}
    meta = {
        "architecture": arch,
        "config": {k: v for k, v in run["model"].items() if k in names},
        "hf_extras": hf_extras,
        "vocab": None,
        "audio": {"sampling_rate": 16000, "do_normalize": bool(data.get("normalize", True))},
    }
    return meta, params_dir


def _strip_boxes(tree: Any) -> Any:
    """Collapses {"value": leaf} nodes (flax Partitioned boxes saved as pytrees) to the leaf."""
    if isinstance(tree, Mapping):
        if set(tree) == {"value"} and not isinstance(tree["value"], Mapping):
            return tree["value"]
        return {k: _strip_boxes(v) for k, v in tree.items()}
    return tree


def _numpy_target(tree: Any) -> Any:
    """Restore target asking for host numpy arrays of the stored shapes."""
    if isinstance(tree, Mapping):
        return {k: _numpy_target(v) for k, v in tree.items()}
    return np.zeros(tuple(tree.shape), np.dtype(tree.dtype))


def restack_layers(params: Any, config: Wav2Vec2Config, scan_layers: bool) -> Any:
    """Converts the Transformer layers between `layers_{i}` subtrees and one stacked `layers`."""

    def fix(enc: dict) -> dict:
        enc = dict(enc)
        n = config.num_hidden_layers
        if scan_layers and "layers_0" in enc:
            layers = [enc.pop(f"layers_{i}") for i in range(n)]
            enc["layers"] = _tree_stack(layers)
        elif not scan_layers and "layers" in enc:
            stacked = enc.pop("layers")
            for i in range(n):
                enc[f"layers_{i}"] = _tree_index(stacked, i)
        return enc

    def walk(tree):
        if not isinstance(tree, Mapping):
            return tree
        return {k: (fix(walk(v)) if k == "encoder" else walk(v)) for k, v in tree.items()}

    return walk(params)


def _tree_stack(trees: list) -> Any:
    if isinstance(trees[0], Mapping):
        return {k: _tree_stack([t[k] for t in trees]) for k in trees[0]}
    return np.stack([np.asarray(t) for t in trees], axis=0)


def _tree_index(tree: Any, i: int) -> Any:
    if isinstance(tree, Mapping):
        return {k: _tree_index(v, i) for k, v in tree.items()}
    return np.asarray(tree)[i]
