"""Sharded TFRecord files of 16 kHz speech with language and transcript, read by random access.

`write_tfrecords` converts any configured corpus split (manifest, Common Voice, MLS, ...) into
`<out>/<split>-00000-of-00004.tfrecord` shards of `tf.train.Example`s:

    audio        bytes   PCM16 little-endian at 16 kHz ("pcm16"), or a FLAC file ("flac")
    encoding     bytes   "pcm16" | "flac"
    num_samples  int64   length at 16 kHz
    language     bytes   language code
    transcript   bytes   text ("" when none)
    id           bytes   original path or key

Next to each shard the writer leaves `<shard>.index.json` (byte offset, length, language,
transcript and id of every record), so a reader can plan batches without touching the audio and
then fetch record i with one seek. Shards work on local disk or any `tf.io.gfile` path (gs://).
Shards without an index (written by other tools) are scanned once on open.
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
from collections.abc import Mapping, Sequence

import numpy as np
import soundfile as sf

from data_pipelines import audio as audio_lib
from data_pipelines._tf import import_tf

logger = logging.getLogger(__name__)

SR = audio_lib.SAMPLE_RATE
_HEADER = 12  # uint64 length + uint32 masked CRC of the length
_FOOTER = 4  # uint32 masked CRC of the data


def _open(path: str, mode: str = "rb"):
    if "://" in path:
        return import_tf().io.gfile.GFile(path, mode)
    return open(path, mode)


def glob(pattern: str) -> list[str]:
    """tf.io.gfile glob (for gs:// and other remote paths), sorted."""
    return sorted(import_tf().io.gfile.glob(pattern))


def _encode_audio(audio: np.ndarray, encoding: str) -> bytes:
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")  # [samples]
    if encoding == "pcm16":
        return pcm.tobytes()
    if encoding == "flac":
        buf = io.BytesIO()
        sf.write(buf, pcm, SR, format="FLAC", subtype="PCM_16")
        return buf.getvalue()
    raise ValueError(f"unknown encoding {encoding!r}; use 'pcm16' or 'flac'")


def decode_audio(data: bytes, encoding: str) -> np.ndarray:
    """Record audio bytes -> float32 [samples] at 16 kHz."""
    if encoding == "pcm16":
        if len(data) == 0:
            raise audio_lib.AudioDecodeError("empty pcm16 record")
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    return audio_lib.load_audio(data, SR)


def make_example(audio: np.ndarray, language: str, transcript: str, key: str, encoding: str):
    """float32 [samples] at 16 kHz + metadata -> serialized tf.train.Example bytes."""
    tf = import_tf()
    feat = tf.train.Feature

    def b(v):
        return feat(bytes_list=tf.train.BytesList(value=[v]))

    ex = tf.train.Example(
        features=tf.train.Features(
            feature={
                "audio": b(_encode_audio(audio, encoding)),
                "encoding": b(encoding.encode()),
                "num_samples": feat(int64_list=tf.train.Int64List(value=[len(audio)])),
                "language": b(language.encode()),
                "transcript": b(transcript.encode()),
                "id": b(key.encode()),
            }
        )
    )
    return ex.SerializeToString()


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
    from data_pipelines import sources as sources_lib

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
            rec = make_example(audio, src.languages[i], text, src.ids[i], encoding)
            s = written % num_shards
            writers[s].write(rec)
            ix = index[s]
            ix["offsets"].append(pos[s])
            ix["num_samples"].append(len(audio))
            ix["languages"].append(src.languages[i])
            ix["transcripts"].append(text)
            ix["ids"].append(src.ids[i])
            pos[s] += _HEADER + len(rec) + _FOOTER
            written += 1
    for w, f, ix in zip(writers, files, index):
        w.close()
        with _open(f + ".index.json", "w") as fh:
            fh.write(json.dumps(ix, ensure_ascii=False))
    return {"files": files, "written": written, "skipped": skipped}


def read_record(path: str, offset: int, fh=None) -> bytes:
    """Reads the TFRecord record starting at byte `offset` of `path`."""
    own = fh is None
    fh = fh or _open(path)
    try:
        fh.seek(offset)
        (length,) = struct.unpack("<Q", fh.read(8))
        fh.read(4)
        data = fh.read(length)
    finally:
        if own:
            fh.close()
    if len(data) != length:
        raise audio_lib.AudioDecodeError(f"truncated record at {path}:{offset}")
    return data


def parse_example(data: bytes) -> dict:
    """Serialized Example -> {"audio": float32 [samples], "language", "transcript", "id"}."""
    tf = import_tf()
    try:
        f = tf.train.Example.FromString(data).features.feature
        enc = f["encoding"].bytes_list.value[0].decode() if "encoding" in f else "pcm16"
        return {
            "audio": decode_audio(f["audio"].bytes_list.value[0], enc),
            "language": f["language"].bytes_list.value[0].decode() if "language" in f else "",
            "transcript": f["transcript"].bytes_list.value[0].decode() if "transcript" in f else "",
            "id": f["id"].bytes_list.value[0].decode() if "id" in f else "",
        }
    except (
        KeyError,
        IndexError,
        ValueError,
    ) as e:  # protobuf DecodeError is a ValueError
        raise audio_lib.AudioDecodeError(f"bad TFRecord example: {e}") from e


def _scan(path: str) -> dict:
    """Builds a shard index by reading every record once (shards without `.index.json`)."""
    ix = {
        "offsets": [],
        "num_samples": [],
        "languages": [],
        "transcripts": [],
        "ids": [],
    }
    with _open(path) as fh:
        pos = 0
        while True:
            head = fh.read(_HEADER)
            if len(head) < _HEADER:
                break
            (length,) = struct.unpack("<Q", head[:8])
            data = fh.read(length)
            fh.read(_FOOTER)
            try:
                ex = parse_example(data)
                n, lang, text, key = (
                    len(ex["audio"]),
                    ex["language"],
                    ex["transcript"],
                    ex["id"],
                )
            except audio_lib.AudioDecodeError:
                n, lang, text, key = -1, "", "", f"{path}@{pos}"
            ix["offsets"].append(pos)
            ix["num_samples"].append(n)
            ix["languages"].append(lang)
            ix["transcripts"].append(text)
            ix["ids"].append(key or f"{path}@{pos}")
            pos += _HEADER + length + _FOOTER
    return ix


class ShardedReader:
    """Random access over TFRecord shards through their indexes; `load(i)` -> float32 [samples]."""

    def __init__(self, files: Sequence[str]):
        self.files = list(files)
        offsets, self.num_samples, self.languages, self.transcripts, self.ids = (
            [],
            [],
            [],
            [],
            [],
        )
        shard = []
        for s, f in enumerate(self.files):
            tf_path = f + ".index.json"
            exists = os.path.exists(tf_path) if "://" not in f else import_tf().io.gfile.exists(tf_path)
            if exists:
                with _open(tf_path, "r") as fh:
                    ix = json.loads(fh.read())
            else:
                logger.info("no index for %s; scanning it once", f)
                ix = _scan(f)
            offsets += ix["offsets"]
            shard += [s] * len(ix["offsets"])
            self.num_samples += ix["num_samples"]
            self.languages += ix["languages"]
            self.transcripts += ix["transcripts"]
            self.ids += ix["ids"]
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._shard = np.asarray(shard, dtype=np.int32)
        self.num_samples = np.asarray(self.num_samples, dtype=np.int64)

    def load(self, i: int) -> np.ndarray:
        """Decodes record i: float32 [samples] at 16 kHz."""
        data = read_record(self.files[self._shard[i]], int(self._offsets[i]))
        return parse_example(data)["audio"]
