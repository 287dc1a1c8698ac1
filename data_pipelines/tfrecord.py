"""Sharded TFRecord files of 16 kHz speech with language and transcript, read by random access.

`tfrecord_writer.write_tfrecords` converts any configured corpus split (manifest, Common Voice, MLS, ...) into
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
from collections.abc import Sequence

import numpy as np
import soundfile as sf

from data_pipelines import audio as audio_lib
from data_pipelines.tf_runtime import import_tf

logger = logging.getLogger(__name__)

SR = audio_lib.SAMPLE_RATE
HEADER_BYTES = 12  # uint64 length + uint32 masked CRC of the length
FOOTER_BYTES = 4  # uint32 masked CRC of the data


def open_file(path: str, mode: str = "rb"):
    """`open` for local paths, `tf.io.gfile.GFile` for remote ones (gs://...)."""
    if "://" in path:
        return import_tf().io.gfile.GFile(path, mode)
    return open(path, mode)


def glob(pattern: str) -> list[str]:
    """tf.io.gfile glob (for gs:// and other remote paths), sorted."""
    return sorted(import_tf().io.gfile.glob(pattern))


def encode_audio(audio: np.ndarray, encoding: str) -> bytes:
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
                "audio": b(encode_audio(audio, encoding)),
                "encoding": b(encoding.encode()),
                "num_samples": feat(int64_list=tf.train.Int64List(value=[len(audio)])),
                "language": b(language.encode()),
                "transcript": b(transcript.encode()),
                "id": b(key.encode()),
            }
        )
    )
    return ex.SerializeToString()


def read_record(path: str, offset: int, fh=None) -> bytes:
    """Reads the TFRecord record starting at byte `offset` of `path`."""
    own = fh is None
    fh = fh or open_file(path)
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
    with open_file(path) as fh:
        pos = 0
        while True:
            head = fh.read(HEADER_BYTES)
            if len(head) < HEADER_BYTES:
                break
            (length,) = struct.unpack("<Q", head[:8])
            data = fh.read(length)
            fh.read(FOOTER_BYTES)
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
            pos += HEADER_BYTES + length + FOOTER_BYTES
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
                with open_file(tf_path, "r") as fh:
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
