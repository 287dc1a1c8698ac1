"""Corpus readers. Each turns one configured corpus split into a random-access `Source`.

A `Source` holds per-utterance metadata in columns (language, length in 16 kHz samples,
transcript) and loads utterance `i` on demand. Knowing every length before decoding is what lets
the sampler plan static-shape global batches identically on every host (see `sampling.py`), so
lengths come from metadata: manifest sample counts, Common Voice `clip_durations.tsv`, MLS
`segments.txt`, TFRecord/TFDS side indexes, and only when none exists from file headers.

Source config (a dict in `data.sources`):
  type: "manifest" | "common_voice" | "mls" | "tfrecord" | "tfds", or one of the benchmark corpora
    in their distributed layouts, each read by its own module: "voxlingua107" (voxlingua.py),
    "voxpopuli" (voxpopuli.py), "babel" (babel.py)
  path: manifest directory / corpus root / TFRecord dir or glob / TFDS data_dir
  splits: {pipeline split name: source split name}, e.g. {"dev": "valid"} for fairseq manifests
  languages: language folders to keep (common_voice, voxlingua107, voxpopuli: empty = every one;
    others: unused)
  language: the language of every utterance when the corpus does not say (manifest, mls, tfds,
    babel)
  text_column: voxpopuli's transcript column ("normalized_text", the default, or "raw_text")
  name: TFDS dataset name (tfds only); audio_key / text_key / language_key: TFDS feature names
"""

from __future__ import annotations

import csv
import glob
import importlib
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from data_pipelines import audio as audio_lib
from data_pipelines import tfrecord
from data_pipelines.source import UNKNOWN_LANGUAGE, Source

logger = logging.getLogger(__name__)

SR = audio_lib.SAMPLE_RATE
_MAX_LISTED = 20

csv.field_size_limit(1 << 24)


class CorpusLayoutError(ValueError):
    """A corpus folder is not in the layout its reader expects; the message names the file."""


def split_name(cfg: Mapping, split: str) -> str:
    """The corpus's name for pipeline split `split` (the source's `splits` mapping, else itself)."""
    splits = dict(cfg.get("splits") or {})
    return splits.get(split, split)


def check_exist(paths: Sequence[str], what: str) -> None:
    """Fails at start, listing them, when files named by a corpus index are missing."""
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        listed = "\n  ".join(missing[:_MAX_LISTED])
        more = f"\n  ... and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        raise FileNotFoundError(
            f"{what}: {len(missing)} of {len(paths)} listed audio files are missing:\n  {listed}{more}"
        )


def probe_lengths(paths: Sequence[str], num_threads: int = 8) -> np.ndarray:
    """Lengths at 16 kHz from file headers; -1 for unreadable files (skipped later, counted)."""

    def one(p):
        try:
            frames, sr = audio_lib.audio_info(p)
        except audio_lib.AudioDecodeError:
            return -1
        return round(frames * SR / sr)

    with ThreadPoolExecutor(num_threads) as pool:
        return np.fromiter(pool.map(one, paths), dtype=np.int64, count=len(paths))


def file_loader(paths: Sequence[str]):
    """`load(i)`: decodes `paths[i]` to float32 [samples] at 16 kHz."""
    return lambda i: audio_lib.load_audio(paths[i], SR)


# ---------------------------------------------------------------------------------------------
# fairseq manifest


def manifest_source(cfg: Mapping, split: str) -> Source:
    """fairseq manifest `<path>/<split>.tsv`: a root line, then `relpath<TAB>num_samples` rows,
    optionally `<TAB>language<TAB>transcript`; transcripts may instead come from `<split>.wrd`
    (one line per row, fairseq's fine-tuning layout). `path` may also name the .tsv file itself."""
    path = cfg["path"]
    tsv = path if path.endswith(".tsv") else os.path.join(path, split_name(cfg, split) + ".tsv")
    if not os.path.exists(tsv):
        raise FileNotFoundError(f"manifest {tsv} not found (split {split!r})")
    with open(tsv, encoding="utf-8") as f:
        root = f.readline().rstrip("\n")
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    default_lang = cfg.get("language") or UNKNOWN_LANGUAGE
    paths, lengths, langs, texts = [], [], [], []
    for n, row in enumerate(rows):
        if len(row) < 2:
            raise ValueError(f"{tsv}:{n + 2}: expected 'path<TAB>num_samples', got {row!r}")
        paths.append(os.path.join(root, row[0]))
        lengths.append(int(row[1]))
        langs.append(row[2] if len(row) > 2 and row[2] else default_lang)
        texts.append(row[3] if len(row) > 3 else None)
    wrd = tsv[: -len(".tsv")] + ".wrd"
    if os.path.exists(wrd):
        with open(wrd, encoding="utf-8") as f:
            texts = [line.rstrip("\n") for line in f]
        if len(texts) != len(paths):
            raise ValueError(f"{wrd} has {len(texts)} lines, {tsv} has {len(paths)} rows")
    check_exist(paths, f"manifest {tsv}")
    has_text = any(t is not None for t in texts)
    return Source(
        f"manifest:{tsv}",
        langs,
        lengths,
        [t or "" for t in texts] if has_text else None,
        paths,
        file_loader(paths),
    )


# ---------------------------------------------------------------------------------------------
# Common Voice


def _cv_locale_dirs(root: str, keep: Sequence[str]) -> list[tuple[str, str]]:
    if os.path.exists(os.path.join(root, "train.tsv")) or os.path.isdir(os.path.join(root, "clips")):
        return [(os.path.basename(os.path.normpath(root)), root)]
    found = sorted(
        (d, os.path.join(root, d)) for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, "clips"))
    )
    if keep:
        missing = set(keep) - {d for d, _ in found}
        if missing:
            raise FileNotFoundError(f"Common Voice locales {sorted(missing)} not under {root}")
        found = [(d, p) for d, p in found if d in set(keep)]
    if not found:
        raise FileNotFoundError(f"no Common Voice locale folders (<locale>/clips) under {root}")
    return found


def common_voice_source(cfg: Mapping, split: str) -> Source:
    """A Common Voice release folder (or one locale folder): `<locale>/<split>.tsv` with `path`,
    `sentence`, `locale` columns and `<locale>/clips/`. Lengths from `clip_durations.tsv` when the
    release has it (CV >= 12), else from file headers."""
    paths, lengths, langs, texts = [], [], [], []
    for locale, ldir in _cv_locale_dirs(cfg["path"], list(cfg.get("languages") or [])):
        tsv = os.path.join(ldir, split_name(cfg, split) + ".tsv")
        if not os.path.exists(tsv):
            raise FileNotFoundError(f"Common Voice split file {tsv} not found")
        with open(tsv, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        clip_paths = [os.path.join(ldir, "clips", r["path"]) for r in rows]
        check_exist(clip_paths, f"Common Voice {tsv}")
        durations = {}
        dur_tsv = os.path.join(ldir, "clip_durations.tsv")
        if os.path.exists(dur_tsv):
            with open(dur_tsv, encoding="utf-8") as f:
                next(f)
                for line in f:
                    clip, ms = line.rstrip("\n").split("\t")
                    durations[clip] = int(ms)
        if all(r["path"] in durations for r in rows):
            lens = np.array([durations[r["path"]] * SR // 1000 for r in rows], dtype=np.int64)
        else:
            lens = probe_lengths(clip_paths)
        paths += clip_paths
        lengths.append(lens)
        langs += [r.get("locale") or locale for r in rows]
        texts += [r.get("sentence") or "" for r in rows]
    return Source(
        f"common_voice:{cfg['path']}:{split}",
        langs,
        np.concatenate(lengths) if lengths else np.zeros(0, np.int64),
        texts,
        paths,
        file_loader(paths),
    )


# ---------------------------------------------------------------------------------------------
# Multilingual LibriSpeech


def mls_source(cfg: Mapping, split: str) -> Source:
    """Multilingual LibriSpeech: `<path>/<split>/transcripts.txt` (`utt_id<TAB>text`), audio at
    `<split>/audio/<speaker>/<book>/<utt_id>.flac` (or .opus); lengths from `segments.txt`
    (`utt_id<TAB>url<TAB>start<TAB>end`) when present. Language from the config or the folder
    name (`mls_german` -> "german")."""
    sdir = os.path.join(cfg["path"], split_name(cfg, split))
    with open(os.path.join(sdir, "transcripts.txt"), encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t", 1) for line in f if line.strip()]
    lang = cfg.get("language") or os.path.basename(os.path.normpath(cfg["path"])).removeprefix("mls_")
    paths = []
    ext = None
    for utt, _ in rows:
        spk, book, _seg = utt.split("_", 2)
        stem = os.path.join(sdir, "audio", spk, book, utt)
        if ext is None:  # one corpus is all flac or all opus; detect once
            ext = next(
                (e for e in (".flac", ".opus", ".wav") if os.path.exists(stem + e)),
                ".flac",
            )
        paths.append(stem + ext)
    check_exist(paths, f"MLS {sdir}")
    seg_file = os.path.join(sdir, "segments.txt")
    lengths = None
    if os.path.exists(seg_file):
        seg = {}
        with open(seg_file, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                seg[parts[0]] = round((float(parts[3]) - float(parts[2])) * SR)
        if all(u in seg for u, _ in rows):
            lengths = [seg[u] for u, _ in rows]
    if lengths is None:
        lengths = probe_lengths(paths)
    return Source(
        f"mls:{sdir}",
        [lang] * len(rows),
        lengths,
        [t for _, t in rows],
        paths,
        file_loader(paths),
    )


# ---------------------------------------------------------------------------------------------
# TFRecord (written by `tfrecord_writer.write_tfrecords`) and TFDS


def tfrecord_source(cfg: Mapping, split: str) -> Source:
    """TFRecord shards written by `data_pipelines.tfrecord_writer.write_tfrecords`:
    `<path>/<split>-*.tfrecord` (or `path` as a glob), read by random access through the
    per-shard `.index.json` the writer leaves next to each shard."""
    path = cfg["path"]
    pattern = path if any(c in path for c in "*?[") else os.path.join(path, split_name(cfg, split) + "-*.tfrecord")
    files = sorted(glob.glob(pattern)) if "://" not in pattern else tfrecord.glob(pattern)
    if not files:
        raise FileNotFoundError(f"no TFRecord shards match {pattern}")
    reader = tfrecord.ShardedReader(files)
    langs = [lang or cfg.get("language") or UNKNOWN_LANGUAGE for lang in reader.languages]
    return Source(
        f"tfrecord:{pattern}",
        langs,
        reader.num_samples,
        reader.transcripts,
        reader.ids,
        reader.load,
    )


def tfds_source(cfg: Mapping, split: str) -> Source:
    """Any TFDS dataset with an audio feature, by random access (`tfds.data_source`, so it must be
    prepared in ArrayRecord format, the default of `tfds_builder.SpeechCorpus`). The first use
    reads every example once to learn lengths, languages and transcripts."""
    from data_pipelines import tfds_reader

    return tfds_reader.tfds_source(cfg, split_name(cfg, split))


def _reader_in(module: str, name: str):
    """A reader that lives in its own module (imported on first use: those modules import this)."""

    def read(cfg: Mapping, split: str) -> Source:
        return getattr(importlib.import_module(module), name)(cfg, split)

    return read


READERS = {
    "manifest": manifest_source,
    "common_voice": common_voice_source,
    "mls": mls_source,
    "tfrecord": tfrecord_source,
    "tfds": tfds_source,
    "voxlingua107": _reader_in("data_pipelines.voxlingua", "voxlingua107_source"),
    "voxpopuli": _reader_in("data_pipelines.voxpopuli", "voxpopuli_source"),
    "babel": _reader_in("data_pipelines.babel", "babel_source"),
    "covost": _reader_in("data_pipelines.covost", "covost_source"),
}


def make_source(cfg: Mapping, split: str) -> Source:
    """Builds the `Source` for one `data.sources` entry and a split name."""
    kind = cfg.get("type")
    if kind not in READERS:
        raise ValueError(f"unknown source type {kind!r}; expected one of {sorted(READERS)}")
    src = READERS[kind](cfg, split)
    logger.info("source %s: %d utterances", src.name, len(src))
    return src
