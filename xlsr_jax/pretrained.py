"""Exported model checkpoints: an Orbax parameter tree plus the JSON that describes it.

Layout of an exported directory (`xlsr_jax.checkpointing` owns the names; the same shape as a
training checkpoint's step directory, so `checkpointing.restore_params` reads it too):

  DIR/params/      Orbax StandardCheckpointer tree of float32 parameters (our Flax names)
  DIR/model.json   {"format": "xlsr_jax.pretrained", "version": 1,
                    "architecture": HF class name (`xlsr_jax.models.ARCHITECTURES`),
                    "config": Wav2Vec2Config.to_dict(),
                    "hf_extras": HF fields we keep for the way back (token ids, label maps),
                    "vocab": {token: id} for CTC models (optional),
                    "audio": {"sampling_rate": 16000, "do_normalize": bool},
                    "generation": search settings (translation models, optional)}
  DIR/tokenizer/   translation models: the target tokenizer's files (sentencepiece.bpe.model, ...)

A translation model's "config" is `SpeechTranslationConfig.to_dict()` (encoder + decoder).

Everything needed to rebuild the model is in the directory. `load_pretrained` accepts anything
`checkpointing.resolve` does: an export, or a training run (its workdir, checkpoints/ folder, a
step or a params folder), reading the model section and the recorded architecture of the run
config stored beside the parameters. Writes go through `fileio.atomic_dir`, so a reader never
sees a half-written directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from xlsr_jax import checkpointing, fileio
from xlsr_jax.constants import SAMPLE_RATE
from xlsr_jax.models.config import ARCHITECTURES, Wav2Vec2Config

log = logging.getLogger(__name__)

FORMAT = "xlsr_jax.pretrained"
VERSION = 1
MODEL_JSON = checkpointing.MODEL_JSON
PARAMS_DIR = checkpointing.PARAMS
TOKENIZER_DIR = "tokenizer"
TOKENIZER_MODEL = "sentencepiece.bpe.model"  # the target sentencepiece model's file name
SPEECH_TRANSLATION = "Wav2Vec2ForSpeechTranslation"


@dataclasses.dataclass
class Pretrained:
    """A loaded checkpoint: config, architecture, parameters and metadata.

    Attributes:
      source: what `checkpointing.resolve` found (which export, run step, ...), for messages.
      run_config: the training run's stored config (None for an export).
    """

    config: Wav2Vec2Config
    architecture: str
    params: Any
    hf_extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    vocab: dict[str, int] | None = None
    audio: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: checkpointing.Resolved | None = None
    run_config: dict[str, Any] | None = None
    generation: dict[str, Any] = dataclasses.field(default_factory=dict)  # translation search settings
    tokenizer_dir: str | None = None  # an export's DIR/tokenizer, when it has one

    def model(self):
        """The Flax module for this architecture (`xlsr_jax.models.model_class`)."""
        from xlsr_jax import models

        return models.model_class(self.architecture)(self.config)

    def target_tokenizer_file(self) -> str | None:
        """A translation model's sentencepiece file: the export's, else the run's data.target.tokenizer."""
        if self.tokenizer_dir and fileio.isfile(fileio.join(self.tokenizer_dir, TOKENIZER_MODEL)):
            return fileio.join(self.tokenizer_dir, TOKENIZER_MODEL)
        path = (((self.run_config or {}).get("data") or {}).get("target") or {}).get("tokenizer")
        return path or None


def config_from_dict(architecture: str, values: Mapping[str, Any]):
    """The config object of `architecture` from its dict (a translation model has two parts)."""
    if architecture == SPEECH_TRANSLATION:
        from xlsr_jax.models.speech_translation import SpeechTranslationConfig

        return SpeechTranslationConfig.from_dict(dict(values))
    return Wav2Vec2Config.from_dict(dict(values))


def encoder_config(config) -> Wav2Vec2Config:
    """The wav2vec 2.0 part of any of our configs."""
    return getattr(config, "encoder", config)


_cli_handler: logging.Handler | None = None


def setup_cli_logging() -> None:
    """Logging of the command-line tools: warnings, plus the line saying which checkpoint
    `load_pretrained` read (e.g. "loaded step 20 (the newest) of runs/sw ...") on the current
    stderr, whatever the root logger's configuration (one handler, replaced on every call)."""
    global _cli_handler
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if _cli_handler is not None:
        log.removeHandler(_cli_handler)
    _cli_handler = logging.StreamHandler(sys.stderr)
    _cli_handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(_cli_handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def default_audio_settings(config) -> dict[str, Any]:
    """Input conventions of the published models: per-utterance normalisation goes with the
    layer-norm extractor (fairseq `normalize=True` for XLSR-53 / XLS-R), raw audio with group norm."""
    return {"sampling_rate": SAMPLE_RATE, "do_normalize": encoder_config(config).feat_extract_norm == "layer"}


def save_pretrained(
    directory: str | os.PathLike,
    params: Any,
    config: Wav2Vec2Config,
    architecture: str,
    *,
    hf_extras: Mapping[str, Any] | None = None,
    vocab: Mapping[str, int] | None = None,
    audio: Mapping[str, Any] | None = None,
    generation: Mapping[str, Any] | None = None,
    tokenizer_files: Mapping[str, bytes] | None = None,
    overwrite: bool = False,
) -> str:
    """Writes an exported checkpoint (see module docstring) atomically.

    Args:
      directory: output directory (must not exist unless `overwrite`).
      params: our parameter tree (numpy or jax arrays; stored as float32).
      config: the model config.
      architecture: one of `xlsr_jax.models.ARCHITECTURES`.
      hf_extras, vocab, audio: metadata carried for conversion back to HF.
      generation: translation models: `xlsr_jax.generation.GenerationConfig` fields (defaults
        of `python -m xlsr_jax.translate`).
      tokenizer_files: translation models: file name -> bytes, stored under DIR/tokenizer/.
    Returns:
      The absolute path written.
    Raises:
      ValueError: unknown architecture. FileExistsError: `directory` exists without `overwrite`.
    """
    import jax
    import orbax.checkpoint as ocp

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")
    with fileio.atomic_dir(directory, overwrite=overwrite) as tmp:
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
        if generation:
            meta["generation"] = dict(generation)
        with open(os.path.join(tmp, MODEL_JSON), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        if tokenizer_files:
            os.makedirs(os.path.join(tmp, TOKENIZER_DIR))
            for name, data in tokenizer_files.items():
                with open(os.path.join(tmp, TOKENIZER_DIR, os.path.basename(name)), "wb") as f:
                    f.write(data)
    return os.path.abspath(os.fspath(directory))


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """Reads and validates DIR/model.json of an exported checkpoint.

    Raises:
      FileNotFoundError: no model.json there. ValueError: another format or version.
    """
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
    """Loads an exported checkpoint or a training run's parameters.

    Args:
      directory: anything `checkpointing.resolve` accepts (an export, a training workdir, its
        checkpoints/ folder, a step or params folder; a run gives its newest step).
      config_overrides: execution fields to change on load (e.g. {"scan_layers": True,
        "dtype": "bfloat16"}); `scan_layers` changes restack the Transformer layers.
      abstract_params: optional pytree of jax.ShapeDtypeStruct with target shardings; without
        it the parameters come back as host numpy arrays.
    Returns:
      `Pretrained` (its `source` says which checkpoint was read; also logged at INFO).
    Raises:
      checkpointing.CheckpointNotFoundError: `directory` is none of those layouts (one line).
      checkpointing.CheckpointDamagedError: nothing readable there (one line per step tried).
      ValueError: a training checkpoint without a usable run config.
    """
    import orbax.checkpoint as ocp

    from xlsr_jax.models.transformer import restack_layers

    def load(found: checkpointing.Resolved):
        run_config = None
        if found.kind == "export":
            meta = read_metadata(found.export_dir)
        else:
            meta, run_config = _training_checkpoint_metadata(found)
        with ocp.StandardCheckpointer() as ckptr:
            if abstract_params is None:
                meta_tree = ckptr.metadata(found.params_dir)
                tree = getattr(meta_tree, "item_metadata", meta_tree)
                tree = getattr(tree, "tree", tree)
                params = ckptr.restore(found.params_dir, _numpy_target(tree))
            else:
                params = ckptr.restore(found.params_dir, abstract_params)
        return found, meta, run_config, params

    # A run's damaged newest step is named in a warning and the previous one read instead.
    found, meta, run_config, params = checkpointing.load_newest_readable(directory, load)
    config = config_from_dict(meta["architecture"], meta["config"])
    params = checkpointing.strip_boxes(params)
    if config_overrides:
        old = encoder_config(config)
        new = dataclasses.replace(old, **dict(config_overrides))
        if new.scan_layers != old.scan_layers:
            params = restack_layers(params, old, new.scan_layers)
        config = dataclasses.replace(config, encoder=new) if config is not old else new
    tokenizer_dir = None
    if found.kind == "export" and fileio.isdir(fileio.join(found.export_dir, TOKENIZER_DIR)):
        tokenizer_dir = fileio.join(found.export_dir, TOKENIZER_DIR)
    log.info("loaded %s (%s)", found.describe(), meta["architecture"])
    return Pretrained(
        config,
        meta["architecture"],
        params,
        meta.get("hf_extras") or {},
        meta.get("vocab"),
        meta.get("audio") or default_audio_settings(config),
        found,
        run_config,
        meta.get("generation") or {},
        tokenizer_dir,
    )


def _training_checkpoint_metadata(found: checkpointing.Resolved) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model.json-equivalent metadata, run config) of a training checkpoint.

    The run config stored with each step has the model section and the trained architecture
    (`checkpointing.run_architecture`; runs that predate the record: from their task).
    """
    if found.config_item is None or not fileio.isfile(found.config_item):
        raise checkpointing.CheckpointNotFoundError(
            f"{found.path}: parameters without a model description (no {MODEL_JSON}, no run config "
            f"beside them); expected {checkpointing.EXPECTED}"
        )
    run = json.loads(fileio.read_text(found.config_item))
    if not isinstance(run.get("model"), Mapping):
        raise ValueError(f"{found.config_item}: run config has no `model` section")  # noqa: TRY004
    architecture = checkpointing.run_architecture(run, found.config_item)
    if architecture == SPEECH_TRANSLATION:  # the task recorded SpeechTranslationConfig's fields
        from xlsr_jax.models.speech_translation import SpeechTranslationConfig

        names = {f.name for f in dataclasses.fields(SpeechTranslationConfig)}
    else:
        names = {f.name for f in dataclasses.fields(Wav2Vec2Config)}
    data = run.get("data") or {}
    hf_extras = {}
    languages = list(data.get("languages") or [])
    if architecture == "Wav2Vec2ForSequenceClassification" and len(languages) == run["model"].get("num_labels"):
        # A language-ID run's classes are its data.languages, in id order (xlsr_jax.tasks.lid).
        hf_extras["id2label"] = {str(i): lang for i, lang in enumerate(languages)}
        hf_extras["label2id"] = {lang: i for i, lang in enumerate(languages)}
    meta = {
        "architecture": architecture,
        "config": {k: v for k, v in run["model"].items() if k in names},
        "generation": _run_generation(run),
        "hf_extras": hf_extras,
        "vocab": run_vocabulary(run, found.path) if architecture == "Wav2Vec2ForCTC" else None,
        "audio": {"sampling_rate": SAMPLE_RATE, "do_normalize": bool(data.get("normalize", True))},
    }
    return meta, run


def _run_generation(run: Mapping[str, Any]) -> dict[str, Any]:
    """A translation run's evaluation search (`st` section) as generation settings, with its
    target language's token forced first (the run's data.target.language)."""
    st = run.get("st") or {}
    if not st:
        return {}
    out = {"num_beams": st.get("eval_beams", 1), "max_length": st.get("eval_max_length", 200)}
    out["length_penalty"] = st.get("eval_length_penalty", 1.0)
    language = ((run.get("data") or {}).get("target") or {}).get("language")
    if language:
        out["target_language"] = language  # resolved to a token id by the tokenizer's user
    return out


def run_vocabulary(run: Mapping[str, Any], where: str) -> dict[str, int] | None:
    """A CTC run's vocabulary {token: id}, rebuilt from its data config as the input pipeline built
    it for training (`data.vocabulary.path`, else the train transcripts); None (with a warning)
    when the corpus is not readable here."""
    import ml_collections

    import data_pipelines

    try:
        vocabulary = data_pipelines.build_vocabulary(ml_collections.ConfigDict(dict(run.get("data") or {})))
    except Exception as e:  # noqa: BLE001 - a corpus or data config this machine cannot read: carry on without
        log.warning("%s: cannot rebuild the run's CTC vocabulary from its data config (%s)", where, e)
        return None
    return {token: i for i, token in enumerate(vocabulary.tokens)}


def _numpy_target(tree: Any) -> Any:
    """Restore target asking for host numpy arrays of the stored shapes."""
    if isinstance(tree, Mapping):
        return {k: _numpy_target(v) for k, v in tree.items()}
    return np.zeros(tuple(tree.shape), np.dtype(tree.dtype))
