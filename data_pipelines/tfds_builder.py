"""TFDS: a builder that turns local corpora into a TFDS dataset, and random-access reading of any
prepared TFDS dataset with an audio feature.

Build (ArrayRecord by default: random access, which the planner needs; TFRecord also works):

    from data_pipelines import tfds_builder
    tfds_builder.prepare(sources=[dict(type="common_voice", path=".../cv")],
                         name="my_corpus", data_dir="gs://bucket/tfds", splits=("train", "dev"))

which writes `<data_dir>/speech_corpus/my_corpus/1.0.0/` with features
    audio (int16 [samples], 16 kHz), num_samples, language, transcript, id.
Read it back (or any other TFDS audio dataset) with a source
    dict(type="tfds", path="<data_dir>/speech_corpus/my_corpus/1.0.0")        # builder dir, or
    dict(type="tfds", name="speech_commands", path="<data_dir>", audio_key="audio",
         text_key="", language_key="", language="en")
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from data_pipelines import audio as audio_lib
from data_pipelines import tfrecord
from data_pipelines._tf import import_tf

logger = logging.getLogger(__name__)

SR = audio_lib.SAMPLE_RATE


def _tfds():
    import_tf()  # CPU-only, quiet, before TFDS pulls TensorFlow in
    import tensorflow_datasets as tfds

    return tfds


def _builder_classes():
    tfds = _tfds()

    class SpeechCorpusConfig(tfds.core.BuilderConfig):
        """Which local corpora (`data.sources`-style dicts) and splits go into the dataset."""

        def __init__(self, *, sources: Sequence[Mapping] = (), splits=("train",), **kwargs):
            super().__init__(**kwargs)
            self.sources = [dict(s) for s in sources]
            self.splits = tuple(splits)

    class SpeechCorpus(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """Local speech corpora as 16 kHz int16 audio with language, transcript and id."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES: ClassVar[dict] = {"1.0.0": "First release."}
        BUILDER_CONFIGS: ClassVar[list] = [SpeechCorpusConfig(name="default")]
        name = "speech_corpus"

        def _info(self):
            return self.dataset_info_from_configs(
                features=tfds.features.FeaturesDict(
                    {
                        "audio": tfds.features.Audio(shape=(None,), dtype=np.int16, sample_rate=SR),
                        "num_samples": np.int64,
                        "language": tfds.features.Text(),
                        "transcript": tfds.features.Text(),
                        "id": tfds.features.Text(),
                    }
                ),
                description="Speech corpora converted by xlsr-jax data_pipelines.tfds_builder.",
            )

        def _split_generators(self, dl_manager):
            return {s: self._generate_examples(s) for s in self.builder_config.splits}

        def _generate_examples(self, split):
            from data_pipelines import sources as sources_lib

            for n, cfg in enumerate(self.builder_config.sources):
                src = sources_lib.make_source(cfg, split)
                for i in range(len(src)):
                    try:
                        wav = src.load(i)
                    except audio_lib.AudioDecodeError as e:
                        logger.warning("tfds_builder: skipping %s", e)
                        continue
                    pcm = np.clip(np.round(wav * 32767.0), -32768, 32767).astype(np.int16)
                    yield (
                        f"{n}:{i}",
                        {
                            "audio": pcm,
                            "num_samples": len(pcm),
                            "language": src.languages[i],
                            "transcript": src.transcripts[i] if src.transcripts is not None else "",
                            "id": src.ids[i],
                        },
                    )

    return SpeechCorpusConfig, SpeechCorpus


def prepare(
    sources: Sequence[Mapping],
    name: str,
    data_dir: str,
    splits: Sequence[str] = ("train", "dev", "test"),
    file_format: str = "array_record",
) -> str:
    """Builds the TFDS dataset `speech_corpus/<name>` from local corpora; returns its directory.

    Args:
      sources: `data.sources`-style dicts (manifest, common_voice, mls, tfrecord).
      name: builder config name (one per corpus mix).
      data_dir: TFDS data_dir (local or gs://).
      splits: split names to convert (each source maps them with its `splits`).
      file_format: "array_record" (random access; needed to train from it) or "tfrecord".
    """
    config_cls, builder_cls = _builder_classes()
    config = config_cls(name=name, sources=sources, splits=splits)
    builder = builder_cls(config=config, data_dir=data_dir, file_format=file_format)
    builder.download_and_prepare()
    return os.fspath(builder.data_path)


def _open_builder(cfg: Mapping):
    tfds = _tfds()
    if cfg.get("name"):
        return tfds.builder(cfg["name"], data_dir=cfg.get("path") or None)
    return tfds.builder_from_directory(cfg["path"])


class _TFRecordSplit:
    """Random access into a TFRecord-format TFDS split: byte offsets from one header scan."""

    def __init__(self, builder, split: str):
        self.features = builder.info.features
        self.records = []  # (file, offset)
        for f in builder.info.splits[split].filepaths:
            f = os.fspath(f)
            with tfrecord._open(f) as fh:
                pos = 0
                while True:
                    head = fh.read(12)
                    if len(head) < 12:
                        break
                    length = int.from_bytes(head[:8], "little")
                    fh.seek(length + 4, 1)
                    self.records.append((f, pos))
                    pos += 12 + length + 4

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        f, off = self.records[i]
        return self.features.deserialize_example_np(tfrecord.read_record(f, off))


def tfds_source(cfg: Mapping, split: str):
    """A `sources.Source` over a prepared TFDS split (see module docstring for the config)."""
    from data_pipelines.sources import UNKNOWN_LANGUAGE, Source

    builder = _open_builder(cfg)
    audio_key = cfg.get("audio_key") or "audio"
    text_key = cfg.get("text_key", "transcript")
    lang_key = cfg.get("language_key", "language")
    audio_feature = builder.info.features[audio_key]
    sr = int(getattr(audio_feature, "sample_rate", None) or cfg.get("sampling_rate") or SR)
    try:
        data = builder.as_data_source(split=split)
    except (
        NotImplementedError,
        ValueError,
        TypeError,
    ) as e:  # TFRecord-format datasets
        logger.info("tfds %s: no ArrayRecord (%s); indexing TFRecord shards", builder.name, e)
        data = _TFRecordSplit(builder, split)
    feats = builder.info.features

    def text_of(ex, key):
        if not key or key not in feats:
            return None
        v = ex[key]
        return v.decode() if isinstance(v, bytes) else str(v)

    def to_float(a):
        a = np.asarray(a)  # [samples] or [samples, channels]
        if np.issubdtype(a.dtype, np.integer):
            a = a.astype(np.float32) / float(np.iinfo(a.dtype).max + 1)
        return audio_lib.resample(audio_lib.downmix(a.astype(np.float32, copy=False)), sr, SR)

    def load(i):
        try:
            ex = data[i]
        except Exception as e:
            raise audio_lib.AudioDecodeError(f"tfds record {i}: {e}") from e
        wav = to_float(ex[audio_key])
        if wav.size == 0:
            raise audio_lib.AudioDecodeError(f"no samples in tfds record {i}")
        return wav

    # One metadata pass: lengths, languages, transcripts (our builder stores num_samples).
    langs, lengths, texts = [], [], []
    has_text = bool(text_key) and text_key in feats
    for i in range(len(data)):
        try:
            ex = data[i]
            n = int(ex["num_samples"]) if "num_samples" in feats else round(len(ex[audio_key]) * SR / sr)
        except Exception:  # noqa: BLE001 -- unreadable record: dropped at planning, counted
            ex, n = {}, -1
        langs.append(text_of(ex, lang_key) if ex else None)
        lengths.append(n)
        texts.append((text_of(ex, text_key) or "") if ex else "")
    default = cfg.get("language") or UNKNOWN_LANGUAGE
    langs = [lang or default for lang in langs]
    return Source(
        f"tfds:{builder.name}:{split}",
        langs,
        lengths,
        texts if has_text else None,
        [f"{builder.name}/{split}[{i}]" for i in range(len(data))],
        load,
    )
