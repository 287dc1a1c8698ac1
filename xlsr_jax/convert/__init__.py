"""Checkpoint conversion between our Orbax checkpoints and PyTorch (transformers, fairseq).

Python API (the CLI `python -m xlsr_jax.convert` / `xlsr-convert` wraps these):

  hf_to_orbax(hf_folder, out_dir)          transformers Wav2Vec2 or SpeechEncoderDecoderModel
                                           (XLS-R translation) folder -> exported checkpoint
  fairseq_to_orbax(pt_file, out_dir)       fairseq wav2vec 2.0 .pt (pretrained or CTC) -> same
  orbax_to_hf(ckpt_dir, out_folder)        exported checkpoint -> transformers folder

  hf_to_params(hf_config, hf_state)        in-memory: (config, architecture, params, extras)
  params_to_hf(config, architecture, params, extras) -> (hf_config, hf_state)

An exported checkpoint is the directory layout of `xlsr_jax.pretrained` (Orbax params +
model.json); load it with `xlsr_jax.pretrained.load_pretrained`. All renames are tables in
`xlsr_jax.convert.tables`; config mapping in `xlsr_jax.convert.configs`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from xlsr_jax import decoding
from xlsr_jax.constants import SAMPLE_RATE
from xlsr_jax.convert import configs, fairseq, hf_io, tables
from xlsr_jax.convert import params as params_lib
from xlsr_jax.convert import speech_translation as st
from xlsr_jax.convert.configs import ConfigError
from xlsr_jax.convert.params import CheckpointMismatchError
from xlsr_jax.convert.torch_pickle import UnsafeCheckpointError
from xlsr_jax.models.config import Wav2Vec2Config

__all__ = [
    "CheckpointMismatchError",
    "ConfigError",
    "UnsafeCheckpointError",
    "configs",
    "fairseq_to_orbax",
    "hf_to_orbax",
    "hf_to_params",
    "orbax_to_hf",
    "params_to_hf",
    "tables",
]

log = logging.getLogger("xlsr_jax.convert")

# HF leaves out masked_spec_embed when masking is off; our model always has the parameter.
_MASK_EMBED = r"(wav2vec2\.)?masked_spec_embed"


def hf_to_params(
    hf_config: Mapping[str, Any], hf_state: Mapping[str, np.ndarray], **overrides: Any
) -> tuple[Wav2Vec2Config, str, dict, dict]:
    """A HF config dict + state dict -> (our config, architecture, params, hf extras).

    Args:
      hf_config: parsed config.json.
      hf_state: HF key -> float array.
      **overrides: our-config fields to set (e.g. scan_layers=True).
    """
    config, arch, extras = configs.hf_to_config(hf_config, **overrides)
    params = params_lib.hf_state_to_params(hf_state, config, arch, allow_missing=(_MASK_EMBED,))
    base = params.get("wav2vec2", params)
    if "masked_spec_embed" not in base:
        # Masking is off in this config (HF then has no such weight): the value is never used.
        base["masked_spec_embed"] = np.zeros((config.hidden_size,), np.float32)
    return config, arch, params, extras


def params_to_hf(
    config: Wav2Vec2Config, architecture: str, params: Any, extras: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Our config + params -> (HF config dict, HF state dict of float32 numpy arrays)."""
    params = _to_numpy(params)
    hf_config = configs.config_to_hf(config, architecture, extras)
    return hf_config, params_lib.params_to_hf_state(params, config, architecture)


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree, dtype=np.float32)


def hf_to_orbax(
    hf_folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    overrides: Mapping[str, Any] | None = None,
    audio: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    revision: str | None = None,
) -> str:
    """Converts a transformers Wav2Vec2 folder (config.json + safetensors/bin) to our checkpoint.

    `hf_folder` may also be a hub model id (`facebook/wav2vec2-xls-r-300m`), fetched into the
    hub cache at `revision` (`hf_io.resolve_hf_source`).

    A CTC folder's vocab.json (if present) is carried along for the way back. The audio settings
    (`sampling_rate`, `do_normalize`) are read as transformers reads them (`hf_io.read_audio_settings`);
    `audio` states them explicitly (wins over the files).

    Raises:
      ValueError: a CTC or classification folder that states no audio settings, and no `audio`.
    """
    from xlsr_jax import pretrained

    hf_folder = hf_io.resolve_hf_source(hf_folder, revision)
    config_path = os.path.join(os.fspath(hf_folder), hf_io.CONFIG)
    hf_config = hf_io.read_hf_config(hf_folder)
    if hf_config.get("model_type") != st.MODEL_TYPE:  # a wav2vec2 config: every field checked first
        with _naming(config_path):
            configs.hf_to_config(hf_config, **dict(overrides or {}))
    state = hf_io.read_hf_state(hf_folder)
    if hf_config.get("model_type") == st.MODEL_TYPE:
        return _hf_translation_to_orbax(hf_folder, out_dir, hf_config, state, overrides, overwrite)
    with _naming(f"{hf_folder} ({hf_io.CONFIG} vs weights)"):
        config, arch, params, extras = hf_to_params(hf_config, state, **dict(overrides or {}))
    vocab = hf_io.read_ctc_vocab(hf_folder)
    # A head that transcribes or classifies raw audio gives different answers at another rate or
    # normalisation: there the settings must be stated, by a file or explicitly.
    audio = hf_io.read_audio_settings(
        hf_folder, needed=arch in ("Wav2Vec2ForCTC", "Wav2Vec2ForSequenceClassification"), explicit=audio
    )
    defaults = pretrained.default_audio_settings(config)
    for key in set(defaults) - set(audio):
        log.warning(
            "%s: no %s stated (no %s / %s, no --%s); assuming %r (%s)",
            hf_folder,
            key,
            hf_io.PREPROCESSOR,
            hf_io.PROCESSOR,
            key,
            defaults[key],
            "wav2vec 2.0's rate"
            if key == "sampling_rate"
            else f"the convention of {config.feat_extract_norm}-norm models",
        )
        audio[key] = defaults[key]
    if arch == "Wav2Vec2ForCTC" and vocab is not None:
        tokenizer = hf_io.read_tokenizer_settings(hf_folder)
        if all(isinstance(i, int) for i in vocab.values()):
            # Added tokens past the CTC head (a tokenizer longer than the head) are never output.
            dropped = sorted(t for t, i in vocab.items() if i >= config.vocab_size)
            if dropped:
                log.warning("%s: tokens %s lie past the CTC head's %d outputs", hf_folder, dropped, config.vocab_size)
            vocab = {t: i for t, i in vocab.items() if i < config.vocab_size}
        # The layout must decode as transformers decodes it; one line naming the field if not.
        labels = decoding.CTCLabels.from_vocab(vocab, tokenizer)
        if len(labels) != config.vocab_size:
            raise decoding.UnsupportedVocabularyError(
                f"{hf_folder}: vocab.json has {len(labels)} tokens but the CTC head has {config.vocab_size} outputs"
            )
        extras[decoding.TOKENIZER_EXTRA] = tokenizer
    elif vocab is not None and not all(isinstance(v, int) for v in vocab.values()):
        vocab = None  # not a CTC model: the nested vocab is not carried
    return pretrained.save_pretrained(
        out_dir, params, config, arch, hf_extras=extras, vocab=vocab, audio=audio, overwrite=overwrite
    )


def fairseq_to_orbax(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dict_path: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Converts a fairseq wav2vec 2.0 `.pt` (pretrained or CTC fine-tuned) to our checkpoint.

    Args:
      checkpoint: the `.pt` file (loaded without executing pickled code).
      out_dir: exported checkpoint directory to create.
      dict_path: CTC only: fairseq's dict.ltr.txt, so the vocabulary travels with the model.
      overrides: our-config fields to set.
    """
    from xlsr_jax import pretrained

    with _naming(os.fspath(checkpoint)):
        hf_config, hf_state, vocab = fairseq.read_fairseq_checkpoint(checkpoint, dict_path)
        audio = hf_config.pop("xlsr_jax_audio")
        config, arch, params, extras = hf_to_params(hf_config, hf_state, **dict(overrides or {}))
    return pretrained.save_pretrained(
        out_dir, params, config, arch, hf_extras=extras, vocab=vocab, audio=audio, overwrite=overwrite
    )


def orbax_to_hf(
    ckpt_dir: str | os.PathLike,
    out_folder: str | os.PathLike,
    *,
    vocab: Mapping[str, int] | None = None,
    labels: list[str] | None = None,
    lm: str | None = None,
    alpha: float = 0.5,
    beta: float = 1.0,
    overwrite: bool = False,
) -> str:
    """Converts our exported checkpoint to a transformers folder that `from_pretrained` loads.

    Writes config.json, model.safetensors and preprocessor_config.json; for CTC models also
    vocab.json, tokenizer_config.json and special_tokens_map.json (from `vocab`, else the
    checkpoint's stored vocabulary) so `Wav2Vec2Processor.from_pretrained` works.

    With `lm` (a KenLM file), a CTC folder also gets `alphabet.json` and `language_model/`
    (with `alpha`/`beta`), the layout `Wav2Vec2ProcessorWithLM.from_pretrained` loads.

    For a classifier, `labels` (class names in id order, e.g. the language codes of a language-ID
    run) become config.json's id2label / label2id.

    Raises:
      ValueError for a CTC model without any vocabulary, or one whose size differs from the
      head's, and for a label list whose length differs from num_labels.
    """
    from xlsr_jax import pretrained

    loaded = pretrained.load_pretrained(ckpt_dir)
    if loaded.architecture == pretrained.SPEECH_TRANSLATION:
        return _translation_to_hf(loaded, out_folder, overwrite)
    extras = dict(loaded.hf_extras)
    tokenizer = extras.pop(decoding.TOKENIZER_EXTRA, None)  # tokenizer files, not config.json
    if labels is not None:
        if len(labels) != loaded.config.num_labels:
            raise ValueError(f"{len(labels)} labels given but the classifier has {loaded.config.num_labels} outputs")
        extras["id2label"] = {str(i): name for i, name in enumerate(labels)}
        extras["label2id"] = {name: i for i, name in enumerate(labels)}
    hf_config, state = params_to_hf(loaded.config, loaded.architecture, loaded.params, extras)
    audio = loaded.audio or pretrained.default_audio_settings(loaded.config)
    files: dict[str, Any] = {
        hf_io.PREPROCESSOR: hf_io.preprocessor_config(
            audio.get("sampling_rate", SAMPLE_RATE),
            audio.get("do_normalize", True),
            return_attention_mask=loaded.config.feat_extract_norm == "layer",
        ),
    }
    if loaded.architecture == "Wav2Vec2ForCTC":
        vocab = dict(vocab or loaded.vocab or {})
        if not vocab:
            raise ValueError(f"{ckpt_dir}: CTC model without a vocabulary; pass vocab= (--vocab vocab.json)")
        if len(vocab) != loaded.config.vocab_size:
            raise ValueError(
                f"vocabulary has {len(vocab)} tokens but the CTC head has {loaded.config.vocab_size} outputs"
            )
        files.update(hf_io.ctc_tokenizer_files(vocab, loaded.config.pad_token_id, tokenizer))
    out = hf_io.write_hf_folder(out_folder, hf_config, state, json_files=files, overwrite=overwrite)
    if lm is not None:
        from xlsr_jax import lm as lm_lib

        if loaded.architecture != "Wav2Vec2ForCTC":
            raise ValueError(f"{ckpt_dir}: --lm needs a CTC model, not {loaded.architecture}")
        labels = decoding.CTCLabels.from_vocab(vocab, tokenizer)
        lm_lib.write_processor_lm_files(out, labels, lm, alpha=alpha, beta=beta)
    return out


@contextlib.contextmanager
def _naming(source: str):
    """Prefixes config and mismatch errors with the file they are about (once)."""
    try:
        yield
    except (ConfigError, CheckpointMismatchError) as e:
        if str(e).startswith(source):
            raise
        raise type(e)(f"{source}: {e}") from None


def _hf_translation_to_orbax(hf_folder, out_dir, hf_config, state, overrides, overwrite) -> str:
    """SpeechEncoderDecoderModel folder -> our checkpoint, with its generation settings
    (generation_config.json, else the config's token ids) and its tokenizer files."""
    from xlsr_jax import generation, pretrained

    folder = os.fspath(hf_folder)
    config, extras = st.hf_to_st_config(hf_config, **dict(overrides or {}))
    params = st.hf_state_to_st_params(state, config)
    defaults = {
        "decoder_start_token_id": config.decoder_start_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "max_length": config.decoder.max_position_embeddings,
        **extras,
    }
    gen_values = _read_json_if_exists(os.path.join(folder, hf_io.GENERATION)) or {}
    gen = generation.GenerationConfig.from_hf({**defaults, **gen_values})
    tokenizer = {}
    for name in hf_io.TOKENIZER_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                tokenizer[name] = f.read()
    pre = _read_json_if_exists(os.path.join(folder, hf_io.PREPROCESSOR))
    audio = pretrained.default_audio_settings(config)
    if pre:
        audio = {"sampling_rate": pre.get("sampling_rate", 16000), "do_normalize": pre.get("do_normalize", True)}
    return pretrained.save_pretrained(
        out_dir,
        params,
        config,
        pretrained.SPEECH_TRANSLATION,
        hf_extras=extras,
        audio=audio,
        generation=gen.to_hf(),
        tokenizer_files=tokenizer,
        overwrite=overwrite,
    )


def _translation_to_hf(loaded, out_folder, overwrite) -> str:
    """Our translation checkpoint -> a SpeechEncoderDecoderModel folder (config.json,
    model.safetensors, generation_config.json, preprocessor_config.json, tokenizer files)."""
    from xlsr_jax import fileio, pretrained

    config = loaded.config
    hf_config = st.st_config_to_hf(config, loaded.hf_extras)
    state = st.st_params_to_hf_state(loaded.params, config)
    audio = loaded.audio or pretrained.default_audio_settings(config)
    files: dict[str, Any] = {
        hf_io.PREPROCESSOR: hf_io.preprocessor_config(
            audio.get("sampling_rate", 16000), audio.get("do_normalize", True), return_attention_mask=True
        ),
    }
    if loaded.generation:
        from xlsr_jax import generation

        settings = dict(loaded.generation)
        language = settings.pop("target_language", None)  # a training run's target language
        if language and loaded.target_tokenizer_file():
            from data_pipelines import translation

            settings["forced_bos_token_id"] = translation.TargetTokenizer(loaded.target_tokenizer_file()).language_id(
                language
            )
        tokens = {"decoder_start_token_id": config.decoder_start_token_id, "eos_token_id": config.eos_token_id}
        gen = generation.GenerationConfig.from_hf({**tokens, "pad_token_id": config.pad_token_id, **settings})
        files[hf_io.GENERATION] = {**gen.to_hf(), "bos_token_id": config.bos_token_id}
    binary = {}
    if loaded.tokenizer_dir:
        for name in fileio.listdir(loaded.tokenizer_dir):
            with open(fileio.join(loaded.tokenizer_dir, name), "rb") as f:
                binary[name] = f.read()
    elif loaded.target_tokenizer_file():  # a training run: its data.target.tokenizer
        with open(loaded.target_tokenizer_file(), "rb") as f:
            binary[pretrained.TOKENIZER_MODEL] = f.read()
    return hf_io.write_hf_folder(
        out_folder, hf_config, state, json_files=files, binary_files=binary, overwrite=overwrite
    )


def _read_json_if_exists(path: str) -> Any:
    if not os.path.isfile(path):
        return None
    return hf_io.read_json(path)
