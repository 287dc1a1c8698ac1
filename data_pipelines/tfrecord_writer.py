"""Writes any configured corpus split as sharded TFRecords with side indexes (`tfrecord` reads them).

The record format and the index are described in `data_pipelines.tfrecord`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence

from data_pipelines import audio as audio_lib
from data_pipelines import sources as sources_lib
from data_pipelines import tfrecord
from data_pipelines.tf_runtime import import_tf

logger = logging.getLogger(__name__)


def write_tfrecords(
    sources: Sequence[Mapping],
    out_dir: str,
    split: str,
    num_shards: int = 4,
    encoding: str = "pcm16",
) -> dict:
    """Converts a corpus split into sharded TFRecords (+ indexes) under `out_dir`.

    Args:
      sources: `data.sources`-style dicts (any type `sources.make_source` reads).
      out_dir: output directory (local or gs://).
      split: split name, also the shard file prefix.
      num_shards: utterances are dealt round-robin to this many shards.
      encoding: "pcm16" (fastest to read) or "flac" (about half the size).
    Returns:
      {"files": [...], "written": n, "skipped": {reason: count}}.
    """
    tf = import_tf()
    tf.io.gfile.makedirs(out_dir)
    files = [os.path.join(out_dir, f"{split}-{s:05d}-of-{num_shards:05d}.tfrecord") for s in range(num_shards)]
    writers = [tf.io.TFRecordWriter(f) for f in files]
    index = [
        {
            "offsets": [],
            "num_samples": [],
            "languages": [],
            "transcripts": [],
            "ids": [],
        }
        for _ in files
    ]
    pos = [0] * num_shards
    written, skipped = 0, {}
    for cfg in sources:
        src = sources_lib.make_source(cfg, split)
        for i in range(len(src)):
            try:
                audio = src.load(i)
            except audio_lib.AudioDecodeError as e:
                skipped["unreadable"] = skipped.get("unreadable", 0) + 1
                logger.warning("write_tfrecords: skipping %s", e)
                continue
            text = src.transcripts[i] if src.transcripts is not None else ""
            rec = tfrecord.make_example(audio, src.languages[i], text, src.ids[i], encoding)
            s = written % num_shards
            writers[s].write(rec)
            ix = index[s]
            ix["offsets"].append(pos[s])
            ix["num_samples"].append(len(audio))
            ix["languages"].append(src.languages[i])
            ix["transcripts"].append(text)
            ix["ids"].append(src.ids[i])
            pos[s] += tfrecord.HEADER_BYTES + len(rec) + tfrecord.FOOTER_BYTES
            written += 1
    for w, f, ix in zip(writers, files, index):
        w.close()
        with tfrecord.open_file(f + ".index.json", "w") as fh:
            fh.write(json.dumps(ix, ensure_ascii=False))
    return {"files": files, "written": written, "skipped": skipped}
