"""Reads any prepared TFDS dataset with an audio feature as a `Source` (random access).

ArrayRecord datasets (the default of `tfds_builder.prepare`) are read through
`tfds.data_source`; TFRecord-format ones through byte offsets from one scan of their shards.
Source config fields: see `data_pipelines.sources` (type "tfds").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import numpy as np

from data_pipelines import audio as audio_lib
from data_pipelines import tfrecord
from data_pipelines.source import UNKNOWN_LANGUAGE, Source
from data_pipelines.tf_runtime import import_tfds

logger = logging.getLogger(__name__)

SR = audio_lib.SAMPLE_RATE


def open_builder(cfg: Mapping):
    """The TFDS builder a `tfds` source config names (`name` + data_dir `path`, or a prepared directory)."""
    tfds = import_tfds()
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
            with tfrecord.open_file(f) as fh:
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
    builder = open_builder(cfg)
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
