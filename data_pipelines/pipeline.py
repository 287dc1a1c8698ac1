"""`build_input`: the training/eval input stream (sources -> plan -> tf.data decode -> batches)."""

from __future__ import annotations

import atexit
import copy
import gc
import hashlib
import json
import logging
import os
import threading
import weakref
from collections.abc import Mapping

import numpy as np

from data_pipelines import audio as audio_lib
from data_pipelines import sampling, text, translation
from data_pipelines import sources as sources_lib
from data_pipelines.tf_runtime import import_tf

logger = logging.getLogger(__name__)

TASKS = ("pretrain", "ctc", "lid", "st")
_MAX_EXAMPLES = 5  # example paths kept per skip reason


def _plain(x):
    """ConfigDict / FrozenConfigDict / tuples -> plain dicts and lists (for hashing and sources)."""
    if hasattr(x, "to_dict"):
        x = x.to_dict()
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _decode_failure_reason(error: Exception) -> str:
    """The skip reason of a failed decode: the decoder's own cause (`AudioDecodeError.reason`:
    empty, not_audio, truncated, non_finite, ...), else from its message: "empty" (no samples),
    "non_finite" (NaN/inf samples) or "unreadable"."""
    reason = getattr(error, "reason", None)
    if reason:
        return reason
    message = str(error)
    if "no samples" in message:
        return "empty"
    if "non-finite" in message:
        return "non_finite"
    return "unreadable"


class VocabularyMismatchError(ValueError):
    """Too many of the training labels are `<unk>`: the vocabulary and the normaliser disagree."""


class _UnkCounter:
    """Counts the `<unk>` share of a split's encoded labels (the word delimiter not counted)."""

    def __init__(self, vocabulary: text.Vocabulary):
        self.vocabulary = vocabulary
        self.total = self.unknown = 0
        self.chars: dict[str, int] = {}
        self.example = None

    def add(self, ids: np.ndarray, raw: str, language: str) -> None:
        vocab = self.vocabulary
        self.total += int(np.count_nonzero(ids != vocab.delimiter_id))
        missing = int(np.count_nonzero(ids == vocab.unk_id))
        if missing:
            self.unknown += missing
            norm = vocab.normalize(raw, language).replace(" ", "")
            for c in norm:
                if c not in vocab.index:
                    self.chars[c] = self.chars.get(c, 0) + 1
            if self.example is None:
                self.example = (raw, vocab.normalize(raw, language))

    def check(self, split: str, vocab_cfg) -> float:
        """Logs the rate; raises for the train split when it is above `vocab_cfg.max_unk_rate`.

        Returns:
          the share of label characters that are `<unk>` (0.0 for no labels).
        Raises:
          ValueError naming the options to change (train split, rate above the limit).
        """
        rate = self.unknown / self.total if self.total else 0.0
        if not self.unknown:
            return rate
        top = sorted(self.chars.items(), key=lambda kv: -kv[1])[:10]
        where = f"vocab.json {vocab_cfg.path}" if vocab_cfg.path else "the vocabulary"
        msg = (
            f"{self.unknown} of {self.total} label characters of split {split!r} ({rate:.1%}) are not in "
            f"{where} and become <unk>; most frequent: {', '.join(f'{c!r} x{n}' for c, n in top)}; "
            f"e.g. {self.example[0]!r} normalises to {self.example[1]!r}"
        )
        limit = float(vocab_cfg.get("max_unk_rate", 0.05))
        if rate <= limit:
            logger.info("%s", msg)
        elif split != "train":
            logger.warning("%s (above data.vocabulary.max_unk_rate=%g)", msg, limit)
        else:
            raise VocabularyMismatchError(
                f"{msg}. That is above data.vocabulary.max_unk_rate={limit:g}: make the transcript "
                "normaliser agree with the vocabulary (data.text.per_language, e.g. "
                "{'en': {'lowercase': False}} for an upper-case vocabulary), or use another "
                "data.vocabulary.path (empty = built from the train transcripts), or raise "
                "data.vocabulary.max_unk_rate."
            )
        return rate


class SkipStats:
    """Thread-safe counts of dropped/skipped utterances by reason, with a few example ids."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}
        self.decode_skips = 0
        self._counted: set = set()  # keys of files already counted (a file is retried each epoch)

    def add(
        self,
        reason: str,
        examples: str | list[str],
        n: int = 1,
        at_decode: bool = False,
        key=None,
    ) -> None:
        """Counts `n` skips for `reason` (keeping a few example ids); logs a summary at the 1st,
        2nd, 4th, 8th, ... decode-time skip so a long run's log stays short.

        Args:
          key: identifies the file (e.g. (source, index)); a key already counted is not counted
            again, so the counts are files, not decode attempts (a bad file is drawn again in
            every epoch and by every bucket plan).
        """
        with self._lock:
            if key is not None:
                if key in self._counted:
                    return
                self._counted.add(key)
            self.counts[reason] = self.counts.get(reason, 0) + n
            ex = self.examples.setdefault(reason, [])
            for e in [examples] if isinstance(examples, str) else examples:
                if len(ex) < _MAX_EXAMPLES and e not in ex:
                    ex.append(e)
            if at_decode:
                self.decode_skips += n
                log = self.decode_skips & (self.decode_skips - 1) == 0
            else:
                log = False
        if log:
            logger.warning("input pipeline skipped bad audio: %s", self.summary())

    def summary(self) -> str:
        """One line: counts per reason and example ids."""
        with self._lock:
            parts = [
                f"{r}={n} (e.g. {', '.join(self.examples.get(r, [])[:3])})" for r, n in sorted(self.counts.items())
            ]
        return "; ".join(parts) if parts else "nothing skipped"

    def as_dict(self) -> dict:
        """{"counts": {reason: n}, "examples": {reason: [ids]}}."""
        with self._lock:
            return {
                "counts": dict(self.counts),
                "examples": copy.deepcopy(self.examples),
            }


def source_configs(cfg) -> list[dict]:
    """`cfg.sources` as a list of plain dicts. It may be a list of dicts or a mapping
    {name: dict}; the mapping form survives FrozenConfigDict and is overridable from the command
    line (`--config.data.sources.cv.path=...`). Mapping entries are taken in sorted name order."""
    srcs = _plain(cfg.sources)
    if isinstance(srcs, Mapping):
        srcs = [srcs[k] for k in sorted(srcs)]
    return [dict(s) for s in srcs]


def load_sources(cfg, split: str) -> list[sources_lib.Source]:
    """The `Source` of every configured corpus for `split`."""
    return [sources_lib.make_source(s, split) for s in source_configs(cfg)]


def languages(cfg, train_sources=None) -> list[str]:
    """Language codes in label-id order: `cfg.languages`, else the sorted languages of the train split.

    Args:
      cfg: the `data` config.
      train_sources: optional callable returning the train split's `Source`s (avoids re-reading).
    """
    train_sources = train_sources or (lambda: load_sources(cfg, "train"))
    if cfg.languages:
        return list(cfg.languages)
    langs = set()
    for src in train_sources():
        langs.update(src.languages)
    return sorted(langs)


def build_target_tokenizer(cfg) -> translation.TargetTokenizer:
    """The speech-translation target tokenizer of `cfg.target.tokenizer` (task "st").

    Raises:
      ValueError naming the field when no tokenizer is configured or the file is missing.
    """
    path = cfg.target.tokenizer
    if not path:
        raise ValueError("task 'st' needs data.target.tokenizer (a sentencepiece model file)")
    if not os.path.isfile(path):
        raise ValueError(f"data.target.tokenizer: {path} not found")
    return translation.TargetTokenizer(path)


def build_vocabulary(cfg, train_sources=None) -> text.Vocabulary:
    """The CTC vocabulary: from `cfg.vocabulary.path` (HF vocab.json), else built from the
    transcripts of the train split of every source (the same for every split).

    Args:
      cfg: the `data` config.
      train_sources: optional callable returning the train split's `Source`s (avoids re-reading).
    """
    text_cfg = _plain(cfg.text)
    if cfg.vocabulary.path:
        with open(cfg.vocabulary.path, encoding="utf-8") as f:
            return text.Vocabulary.from_json(f.read(), text_cfg)
    train_sources = train_sources or (lambda: load_sources(cfg, "train"))
    keep = set(languages(cfg, train_sources))
    pairs = []
    for src in train_sources():
        if src.transcripts is not None:
            pairs += [(t, lang) for t, lang in zip(src.transcripts, src.languages) if lang in keep]
    if not pairs:
        raise ValueError("task 'ctc' needs transcripts in the train split of some source")
    return text.Vocabulary.build(pairs, text_cfg)


_LIVE_PIPELINES: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # tf.data generator iterators finalised after the interpreter has shut down print
    # "Python interpreter state is not initialized" errors; close them while Python still runs.
    pipes = list(_LIVE_PIPELINES)
    for pipe in pipes:
        pipe._iterator = None
    if pipes:
        gc.collect()  # once: the iterators' C++ resources go while Python still runs


class InputPipeline:
    """Iterator of host-local batches (see `build_input`); position saved by get/set_state."""

    def __init__(
        self,
        cfg,
        split: str,
        task: str,
        process_index: int = 0,
        process_count: int = 1,
        repeat: bool | None = None,
    ):
        """See `build_input` (the public constructor) for the arguments."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if cfg.batch_size % process_count:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by process_count {process_count}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        if cfg.sampling_rate != audio_lib.SAMPLE_RATE:
            raise ValueError(
                f"data.sampling_rate is {cfg.sampling_rate}: only {audio_lib.SAMPLE_RATE} Hz is supported (the "
                "wav2vec 2.0 feature encoder's rate; audio at other rates is resampled to it)"
            )
        self.cfg, self.split, self.task = cfg, split, task
        self.process_index, self.process_count = process_index, process_count
        self.local_batch_size = cfg.batch_size // process_count
        self.repeat = (split == "train") if repeat is None else bool(repeat)
        self.stats_tracker = SkipStats()

        # Language ids and the vocabulary come from the train split, so every split agrees.
        self.sources = load_sources(cfg, split)
        cache = {"train": self.sources} if split == "train" else {}

        def train_sources():
            if "train" not in cache:
                cache["train"] = load_sources(cfg, "train")
            return cache["train"]

        self.languages = languages(cfg, train_sources)
        self._lang_id = {lang: i for i, lang in enumerate(self.languages)}
        self.vocabulary = build_vocabulary(cfg, train_sources) if task == "ctc" else None
        self.target_tokenizer = build_target_tokenizer(cfg) if task == "st" else None
        self._fingerprint = hashlib.sha1(
            json.dumps(
                [
                    source_configs(cfg),
                    split,
                    task,
                    self.languages,
                    self.repeat,
                    {
                        k: _plain(cfg[k])
                        for k in (
                            "seed",
                            "batch_size",
                            "sampling_alpha",
                            "corpus_alpha",
                            "min_sample_size",
                            "max_sample_size",
                            "crop_to_batch_min",
                            "bucket_boundaries",
                            "num_buckets",
                            "pad_multiple",
                            "max_samples_per_batch",
                            "samples_per_label",
                        )
                    },
                    _plain(cfg.target) if task == "st" else None,
                ],
                sort_keys=True,
            ).encode()
        ).hexdigest()[:16]
        self._plan = self._make_plan()
        self._log_plan()
        if self.repeat:
            probs = np.array([self.probabilities.get(lang, 0.0) for lang in self.languages])
            self._planner = sampling.TrainPlanner(self._plan, probs, cfg.corpus_alpha, len(self.sources))
        else:
            self._planner = sampling.EvalPlanner(self._plan)
        self._state = self._wrap_state(self._planner.state())
        self._decoder = _Decoder(self)
        # (numpy iterator, {planned batch number: state after it}) of the running stream. Each
        # stream plans with its own planner copy, so a replaced stream whose prefetch thread is
        # still winding down cannot disturb the new one.
        self._iterator = None
        self._snapshots: dict[int, dict] = {}
        self._snap_lock = threading.Lock()
        _LIVE_PIPELINES.add(self)

    # -- planning --------------------------------------------------------------------------------
    def _make_plan(self) -> sampling.Plan:
        cfg = self.cfg
        max_len = cfg.max_sample_size
        if cfg.max_samples_per_batch:
            max_len = min(max_len, cfg.max_samples_per_batch // cfg.batch_size)
        shapes = sampling.bucket_boundaries(
            cfg.min_sample_size,
            max_len,
            cfg.num_buckets,
            cfg.pad_multiple,
            list(cfg.bucket_boundaries),
        )
        self.crop_to_min = bool(cfg.crop_to_batch_min) and self.task != "ctc"
        max_len = shapes[-1]
        if self.task == "st":
            label_lens = [int(cfg.target.max_length)] * len(shapes)  # one target length for all buckets
        else:
            label_lens = [sampling.label_length(s, cfg.samples_per_label) if self.task == "ctc" else 0 for s in shapes]
        bounds = np.asarray(shapes)
        refs, lengths, langs, buckets = [], [], [], []
        stats = self.stats_tracker
        per_lang = _plain(cfg.text).get("per_language")
        unk = _UnkCounter(self.vocabulary) if self.task == "ctc" else None

        def drop(keep, mask, reason, src):
            """Counts and removes `mask` from `keep` (vectorised: fast on million-clip corpora)."""
            idx = np.flatnonzero(mask)
            if idx.size:
                stats.add(reason, [src.ids[j] for j in idx[:_MAX_EXAMPLES]], n=int(idx.size))
            return keep & ~mask

        for s, src in enumerate(self.sources):
            n = np.asarray(src.num_samples, dtype=np.int64)  # [utterances]
            lang = np.array([self._lang_id.get(x, -1) for x in src.languages], np.int64)
            keep = np.ones(len(src), bool)
            keep = drop(keep, lang < 0, "other_language", src)
            keep = drop(keep, keep & (n < 0), "unreadable", src)
            keep = drop(keep, keep & (n == 0), "empty", src)
            keep = drop(keep, keep & (n > 0) & (n < cfg.min_sample_size), "too_short", src)
            eff = np.minimum(n, max_len)
            if self.crop_to_min:
                b = np.maximum(np.searchsorted(bounds, eff, side="right") - 1, 0)
            else:
                b = np.minimum(np.searchsorted(bounds, eff, side="left"), len(bounds) - 1)
            if self.task == "ctc":
                keep = drop(keep, keep & (n > max_len), "too_long", src)
                no_text = np.zeros(len(src), bool)
                too_many = np.zeros(len(src), bool)
                for j in np.flatnonzero(keep):
                    t = src.transcripts[j] if src.transcripts is not None else ""
                    if not text.normalize_text(t, src.languages[j], per_lang):
                        no_text[j] = True
                        continue
                    ids = self.vocabulary.encode(t, src.languages[j])
                    unk.add(ids, t, src.languages[j])
                    if len(ids) > label_lens[b[j]]:
                        too_many[j] = True
                keep = drop(keep, no_text, "no_transcript", src)
                keep = drop(keep, too_many, "label_too_long", src)
            if self.task == "st":
                keep = drop(keep, keep & (n > max_len), "too_long", src)
                targets = src.transcripts if src.transcripts is not None else [""] * len(src)
                no_target = np.array([not t.strip() for t in targets], bool)
                keep = drop(keep, keep & no_target, "no_translation", src)
                # Targets longer than target.max_length are cut at decode time and counted there.
            idx = np.flatnonzero(keep)
            refs.append(np.stack([np.full(idx.size, s), idx], axis=1))
            lengths.append(n[idx])
            langs.append(lang[idx])
            buckets.append(b[idx])
        refs = np.concatenate(refs) if refs else np.zeros((0, 2), np.int64)
        lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        langs = np.concatenate(langs) if langs else np.zeros(0, np.int64)
        buckets = np.concatenate(buckets) if buckets else np.zeros(0, np.int64)
        # Hours per language (for sampling) and per (language, source) (logged).
        sec = lengths / audio_lib.SAMPLE_RATE
        self.hours = {
            code: float(sec[langs == k].sum()) / 3600 for k, code in enumerate(self.languages) if np.any(langs == k)
        }
        self.hours_by_source = {
            code: {
                src.name: float(sec[(langs == k) & (refs[:, 0] == si)].sum()) / 3600
                for si, src in enumerate(self.sources)
            }
            for k, code in enumerate(self.languages)
        }
        if unk is not None:
            self.unk_rate = unk.check(self.split, cfg.vocabulary)
        if not len(refs):
            raise ValueError(f"no usable utterances in split {self.split!r} ({stats.summary()})")
        self.probabilities = sampling.language_probabilities(self.hours, cfg.sampling_alpha)
        self.bucket_shapes = list(shapes)
        self.label_lengths = label_lens
        return sampling.Plan(
            refs.astype(np.int64),
            lengths.astype(np.int64),
            langs.astype(np.int32),
            buckets.astype(np.int32),
            shapes,
            label_lens,
            cfg.batch_size,
            cfg.seed,
        )

    def _log_plan(self) -> None:
        logger.info(
            "input %s/%s: %d utterances, buckets %s%s, process %d/%d, local batch %d",
            self.split,
            self.task,
            len(self._plan.lengths),
            self.bucket_shapes,
            f" labels {self.label_lengths}" if self.task in ("ctc", "st") else "",
            self.process_index,
            self.process_count,
            self.local_batch_size,
        )
        for lang in self.languages:
            logger.info(
                "  language %-6s %8.3f h  sampling p=%.4f (alpha=%.2f)%s",
                lang,
                self.hours.get(lang, 0.0),
                self.probabilities.get(lang, 0.0),
                self.cfg.sampling_alpha,
                "" if self.repeat else " (eval: natural order)",
            )
            if len(self.sources) > 1:
                for name, h in self.hours_by_source.get(lang, {}).items():
                    if h > 0:
                        logger.info("    %8.3f h from %s", h, name)
        if self.stats_tracker.counts:
            logger.warning(
                "input %s: dropped at start: %s",
                self.split,
                self.stats_tracker.summary(),
            )

    # -- state -----------------------------------------------------------------------------------
    def _wrap_state(self, planner_state: dict) -> dict:
        return {"fingerprint": self._fingerprint, "planner": planner_state}

    def get_state(self) -> dict:
        """Position of the stream after the last batch returned (small, JSON-serialisable)."""
        return copy.deepcopy(self._state)

    def set_state(self, state: dict) -> None:
        """Continues exactly after the batch at which `state` was taken (same data config)."""
        if state.get("fingerprint") != self._fingerprint:
            raise ValueError(
                "input state was saved with a different data config, split or task "
                f"({state.get('fingerprint')} != {self._fingerprint}); cannot resume the stream"
            )
        self._planner.restore(state["planner"])  # validates it against this plan
        self._state = copy.deepcopy(state)
        self._iterator = None  # drops prefetched batches of the old position

    # -- iteration -------------------------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self) -> dict:
        """Next host-local batch (numpy). Raises StopIteration at the end of an eval pass."""
        if self._iterator is None:
            planner = copy.copy(self._planner)
            planner.restore(self._state["planner"])  # fresh mutable state, own caches
            self._snapshots, self._snap_lock = {}, threading.Lock()
            snaps, lock = self._snapshots, self._snap_lock
            dec = self._decoder  # the lambda must not capture `self` (see _Decoder)
            ds = dec._dataset(lambda: dec._local_batches(planner, snaps, lock))
            self._iterator = iter(ds.as_numpy_iterator())
        try:
            number, audio, padding, labels, label_padding, lang, valid = next(self._iterator)
        except StopIteration:
            if self.stats_tracker.counts:
                logger.warning(
                    "input %s: end of pass; skipped: %s",
                    self.split,
                    self.stats_tracker.summary(),
                )
            raise
        with self._snap_lock:
            self._state = self._snapshots.pop(int(number))
            for k in [k for k in self._snapshots if k < number]:
                del self._snapshots[k]
        batch = {
            "audio": audio,  # float32 [B_local, S]
            "padding_mask": padding,  # bool [B_local, S], True = padding
            "language": lang,  # int32 [B_local]
            "valid": valid,  # bool [B_local], False = filler/substitute row
        }
        if self.task in ("ctc", "st"):
            # ctc: 0 (blank) beyond the text; st: `[language token] pieces </s>` then <pad> (1),
            # so labels[:, 0] names each row's target language.
            batch["labels"] = labels  # int32 [B_local, L]
            batch["label_padding"] = label_padding  # bool [B_local, L], True = padding
        return batch

    # -- info ------------------------------------------------------------------------------------
    @property
    def stats(self) -> dict:
        """Skipped utterances: {"counts": {reason: n}, "examples": {reason: [ids]}}."""
        return self.stats_tracker.as_dict()

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """Every (S, L) a batch can have (L = 0 without labels): the static shapes to compile."""
        return list(zip(self.bucket_shapes, self.label_lengths))

    @property
    def num_batches(self) -> int | None:
        """Batches in one eval pass (None for the endless training stream)."""
        return None if self.repeat else len(self._planner)

    def close(self) -> None:
        """Drops the tf.data iterator (and its prefetch threads); iterating again restarts the
        stream from the last returned batch."""
        self._iterator = None


class _Decoder:
    """Plans and decodes one host's batches inside tf.data.

    Kept apart from `InputPipeline` on purpose: the tf.data graph holds these callables, and
    a reference from it back to the pipeline would be a cycle through C++ that Python's garbage
    collector cannot see, so dropped pipelines (and their prefetch threads) would never be freed.
    """

    def __init__(self, pipe: InputPipeline):
        self.cfg, self.task = pipe.cfg, pipe.task
        self.sources, self.vocabulary = pipe.sources, pipe.vocabulary
        self.target_tokenizer, self.target_language = pipe.target_tokenizer, pipe.cfg.target.language
        self.lang_id, self.stats_tracker = pipe._lang_id, pipe.stats_tracker
        self.plan, self.fingerprint = pipe._plan, pipe._fingerprint
        self.bucket_shapes, self.label_lengths = pipe.bucket_shapes, pipe.label_lengths
        self.process_index, self.local_batch_size = (
            pipe.process_index,
            pipe.local_batch_size,
        )

    # -- decoding --------------------------------------------------------------------------------
    def _local_batches(self, planner, snapshots: dict, lock: threading.Lock):
        """Generator of this host's slice of each planned global batch (runs inside tf.data)."""
        lo = self.process_index * self.local_batch_size
        hi = lo + self.local_batch_size
        while True:
            batch = planner.next_batch()
            if batch is None:
                return
            number = planner.batches  # 1-based count of planned batches
            with lock:
                snapshots[number] = {
                    "fingerprint": self.fingerprint,
                    "planner": planner.state(),
                }
            b = batch["bucket"]
            refs = self.plan.refs[batch["rows"][lo:hi]]  # [B_local, 2]
            yield (
                number,
                refs[:, 0].astype(np.int32),
                refs[:, 1],
                np.asarray(batch["draws"][lo:hi], np.int64),
                np.asarray(batch["valid"][lo:hi], bool),
                self.bucket_shapes[b],
                self.label_lengths[b],
            )

    def _decode_batch(self, s, i, draw, valid, shape, label_len):
        """Decodes one host-local batch: numpy arrays [B] of refs -> the batch's arrays."""
        rows = [
            self._decode(*args, shape, label_len) for args in zip(s.tolist(), i.tolist(), draw.tolist(), valid.tolist())
        ]
        audio, padding, labels, label_padding, lang, ok = (np.stack(x) for x in zip(*rows))
        return self._fill_failed(audio, padding, labels, label_padding, lang, ok, valid)

    def _decode(self, s, i, draw, valid, shape, label_len):
        """One utterance -> (audio [S], padding [S], labels [L], label_padding [L], lang, ok).

        Filler rows (valid=False, end of an eval pass) are decoded like the others, so every host
        layout yields the same arrays, but their failures are not counted twice."""
        s, i, draw, shape, label_len = (
            int(s),
            int(i),
            int(draw),
            int(shape),
            int(label_len),
        )
        src = self.sources[s]
        sid = src.ids[i]
        fail = (
            np.zeros(shape, np.float32),
            np.ones(shape, bool),
            np.zeros(label_len, np.int32),
            np.ones(label_len, bool),
            np.int32(0),
            False,
        )

        def skip(reason, example):
            if valid:
                self.stats_tracker.add(reason, example, at_decode=True, key=(s, i))
            return fail

        try:
            wav = src.load(i)  # [samples] float32 16 kHz
        except audio_lib.AudioDecodeError as e:
            # Counted by cause; the example keeps the decoder's words (which say why).
            return skip(_decode_failure_reason(e), f"{sid} ({e})")
        except Exception as e:  # noqa: BLE001 -- a vanished/unreadable file must not stop a run
            return skip("unreadable", f"{sid} ({type(e).__name__}: {e})")
        if len(wav) < self.cfg.min_sample_size:
            return skip("too_short", sid)
        if self.cfg.normalize:
            wav = audio_lib.normalize(wav)
        if len(wav) > shape:
            if self.task == "ctc" or draw < 0:
                start = 0  # eval and ctc: deterministic, keep the beginning
            else:
                rng = np.random.default_rng([self.cfg.seed, 2, draw])
                start = int(rng.integers(0, len(wav) - shape + 1))
            wav = wav[start : start + shape]
        n = len(wav)
        audio = np.zeros(shape, np.float32)
        audio[:n] = wav
        padding = np.arange(shape) >= n
        labels = np.zeros(label_len, np.int32)
        label_padding = np.ones(label_len, bool)
        if self.task == "ctc":
            ids = self.vocabulary.encode(src.transcripts[i], src.languages[i])[:label_len]
            labels[: len(ids)] = ids
            label_padding[: len(ids)] = False
        elif self.task == "st":
            language = getattr(src, "target_languages", None)
            language = language[i] if language is not None else self.target_language
            ids = self.target_tokenizer.encode(src.transcripts[i], language)
            if len(ids) > label_len:  # cut, </s> kept last, and counted (never an error)
                ids = ids[: label_len - 1] + [translation.EOS]
                if valid:
                    self.stats_tracker.add("target_truncated", sid)
            labels[:] = translation.PAD
            labels[: len(ids)] = ids
            label_padding[: len(ids)] = False
        return (
            audio,
            padding,
            labels,
            label_padding,
            np.int32(self.lang_id[src.languages[i]]),
            True,
        )

    @staticmethod
    def _fill_failed(audio, padding, labels, label_padding, lang, ok, valid):
        """Replaces rows that failed to decode with copies of good rows, marked invalid, so the
        batch keeps its static shape on every host. With no good row on this host they become
        unpadded silence with no labels (never all-padding rows, which can make per-utterance
        normalisations divide by zero)."""
        ok = np.asarray(ok)
        if ok.all():
            return audio, padding, labels, label_padding, lang, valid
        good = np.flatnonzero(ok)
        bad = np.flatnonzero(~ok)
        valid = valid.copy()
        valid[bad] = False
        if good.size:
            src = good[np.arange(bad.size) % good.size]
            for arr in (audio, padding, labels, label_padding, lang):
                arr[bad] = arr[src]
        else:
            audio[bad] = 0.0
            padding[bad] = False
            labels[bad] = 0
            label_padding[bad] = True
        return audio, padding, labels, label_padding, lang, valid

    def _dataset(self, generator):
        tf = import_tf()
        sig = (
            tf.TensorSpec((), tf.int64),  # planned batch number
            tf.TensorSpec((None,), tf.int32),  # [B] source index
            tf.TensorSpec((None,), tf.int64),  # [B] entry index
            tf.TensorSpec((None,), tf.int64),  # [B] draw id (crop seed; -1 in eval)
            tf.TensorSpec((None,), tf.bool),  # [B] valid row
            tf.TensorSpec((), tf.int32),  # padded length S
            tf.TensorSpec((), tf.int32),  # padded label length L
        )
        ds = tf.data.Dataset.from_generator(generator, output_signature=sig)

        # One Python call per batch, not per utterance: tf.data's per-element overhead is then
        # paid B times less often (measured: ~40% of CPU per utterance on the demo corpus).
        # Batches decode in parallel; libsndfile and soxr release the GIL while they work.
        def decode(number, s, i, draw, valid, shape, label_len):
            outs = tf.numpy_function(
                self._decode_batch,
                [s, i, draw, valid, shape, label_len],
                [tf.float32, tf.bool, tf.int32, tf.bool, tf.int32, tf.bool],
                stateful=False,
            )
            return (number, *outs)

        calls = self.cfg.num_parallel_calls
        ds = ds.map(
            decode,
            num_parallel_calls=tf.data.AUTOTUNE if calls < 0 else calls,
            deterministic=True,
        )
        ds = ds.prefetch(self.cfg.prefetch)
        opts = tf.data.Options()
        opts.threading.private_threadpool_size = max(1, self.cfg.num_threads)
        opts.threading.max_intra_op_parallelism = 1
        opts.deterministic = True
        opts.autotune.cpu_budget = max(1, self.cfg.num_threads)
        return ds.with_options(opts)


def build_input(
    cfg,
    split: str = "train",
    task: str = "pretrain",
    process_index: int = 0,
    process_count: int = 1,
    repeat: bool | None = None,
) -> InputPipeline:
    """Builds the input stream for one host.

    Args:
      cfg: the `data` config (`default_config()` / `demo_corpus_config()`).
      split: split name ("train", "dev", "test"; mapped per source by its `splits`).
      task: "pretrain" (audio), "ctc" (+ labels), "lid" (language is the label), "st" (+ target
        token labels from `cfg.target`, for speech translation).
      process_index, process_count: this host and the number of hosts (jax.process_index(),
        jax.process_count()); each host gets rows [i*B/n, (i+1)*B/n) of every global batch.
      repeat: endless sampled stream (default for "train") or one ordered pass (default otherwise).
    Returns:
      an `InputPipeline`: iterate it for dict batches; get_state()/set_state() to resume.
    """
    return InputPipeline(cfg, split, task, process_index, process_count, repeat)
