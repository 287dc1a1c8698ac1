"""TFDS: a builder that turns local corpora into a TFDS dataset (`tfds_reader` reads it back).

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
from data_pipelines import sources as sources_lib
from data_pipelines.tf_runtime import import_tfds

logger = logging.getLogger(__name__)

SR = audio_lib.SAMPLE_RATE


def _builder_classes():
    tfds = import_tfds()

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
