"""CTC decoding and error rates: greedy decoding, WER/CER (jiwer), optional n-gram beam search;
BLEU and chrF of translations (sacrebleu).

Greedy decoding is the metric of the wav2vec 2.0 / XLS-R papers' "no LM" columns: argmax per
frame, collapse repeats, drop blanks. Error rates are corpus-level (total edits / total reference
words or characters, as jiwer and fairseq's `wer` compute them), overall and per language.

`CTCLabels` is the one place that reads a vocabulary by token *name*, as transformers'
`Wav2Vec2CTCTokenizer` does: the blank is the pad token, the word delimiter is the tokenizer's
`word_delimiter_token` (possibly absent), and the other special tokens are whatever the tokenizer
names them, at whatever ids the vocabulary gives them. Greedy transcripts (`CTCLabels.decode_ctc`)
and the label lists handed to beam-search decoders (`xlsr_jax.lm`) are built from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def greedy_ids(logits: jax.Array, frame_padding: jax.Array, blank_id: int = 0) -> jax.Array:
    """Best class per frame, blank at padding frames (jit-friendly).

    Args:
      logits: float [batch, frames, vocab].
      frame_padding: bool [batch, frames], True at padding.
      blank_id: the CTC blank.
    Returns:
      int32 [batch, frames].
    """
    ids = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jnp.where(frame_padding, blank_id, ids)


def greedy_decode(ids: np.ndarray, vocabulary: Any) -> list[str]:
    """Greedy CTC transcripts from per-frame ids.

    Args:
      ids: int [batch, frames] from `greedy_ids` (padding frames are blanks).
      vocabulary: `data_pipelines.Vocabulary` (collapses repeats, drops blanks and specials).
    Returns:
      One string per row.
    """
    return [vocabulary.decode_ctc(row) for row in np.asarray(ids)]


def label_texts(labels: np.ndarray, label_padding: np.ndarray, vocabulary: Any) -> list[str]:
    """Reference transcripts from a batch's labels ([batch, L] ids, padding True beyond the text)."""
    return [vocabulary.decode(row[~pad]) for row, pad in zip(np.asarray(labels), np.asarray(label_padding))]


class UnsupportedVocabularyError(ValueError):
    """A vocabulary/tokenizer layout that `CTCLabels` cannot decode as transformers does."""


# Wav2Vec2CTCTokenizer's defaults (transformers/models/wav2vec2/tokenization_wav2vec2.py).
HF_TOKENIZER_DEFAULTS = {
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "word_delimiter_token": "|",
    "do_lower_case": False,
}
# Where an export keeps its tokenizer settings: `Pretrained.hf_extras[TOKENIZER_EXTRA]`.
TOKENIZER_EXTRA = "tokenizer_config"
# pyctcdecode's name for the unknown token in an alphabet (pyctcdecode/alphabet.py UNK_TOKEN).
PYCTCDECODE_UNK = "\u2047"


@dataclasses.dataclass(frozen=True)
class CTCLabels:
    """A CTC vocabulary read by token name, as `Wav2Vec2CTCTokenizer` reads it.

    Attributes:
      tokens: the token of each output id, [vocab] strings.
      blank_id: id of the pad token, the CTC blank.
      delimiter_id: id of the word delimiter token, or None when the vocabulary has none (then
        words are not separated, as with transformers).
      special_ids: ids of the named special tokens present (pad, unk, bos, eos and any
        `additional_special_tokens`), blank included.
      do_lower_case: transcripts are lower-cased (a vocabulary of upper-case letters).
    """

    tokens: tuple[str, ...]
    blank_id: int
    delimiter_id: int | None
    special_ids: frozenset[int]
    do_lower_case: bool = False

    @classmethod
    def from_vocab(cls, vocab: Mapping[str, int], tokenizer_config: Mapping[str, Any] | None = None) -> CTCLabels:
        """Builds the labels from `vocab.json` content and tokenizer settings.

        Args:
          vocab: {token: id}, ids a permutation of 0..V-1.
          tokenizer_config: tokenizer_config.json / special_tokens_map.json fields (pad_token,
            unk_token, bos_token, eos_token, word_delimiter_token, do_lower_case,
            additional_special_tokens); missing fields take `HF_TOKENIZER_DEFAULTS`.
        Raises:
          UnsupportedVocabularyError: nested (multi-lingual) vocab, ids not 0..V-1, or a pad
            token that is not in the vocabulary (one line naming the field).
        """
        settings = {**HF_TOKENIZER_DEFAULTS, **dict(tokenizer_config or {})}  # an explicit None = no such token
        if not vocab or not all(isinstance(i, int) for i in vocab.values()):
            raise UnsupportedVocabularyError(
                "vocab.json: expected one flat {token: id} vocabulary (a per-language nested vocab is not supported)"
            )
        tokens: list[str | None] = [None] * len(vocab)
        for token, i in vocab.items():
            if not 0 <= i < len(tokens) or tokens[i] is not None:
                raise UnsupportedVocabularyError(f"vocab.json: ids must be a permutation of 0..{len(vocab) - 1}")
            tokens[i] = token
        index = {t: i for i, t in enumerate(tokens)}
        pad = _token_name(settings["pad_token"])
        if pad not in index:
            raise UnsupportedVocabularyError(
                f"tokenizer_config.json: pad_token {pad!r} (the CTC blank) is not in vocab.json"
            )
        names = [_token_name(settings.get(k)) for k in ("pad_token", "unk_token", "bos_token", "eos_token")]
        names += [_token_name(t) for t in settings.get("additional_special_tokens") or ()]
        delimiter = _token_name(settings.get("word_delimiter_token"))
        return cls(
            tokens=tuple(tokens),
            blank_id=index[pad],
            delimiter_id=index.get(delimiter),
            special_ids=frozenset(index[n] for n in names if n in index and n != delimiter),
            do_lower_case=bool(settings.get("do_lower_case", False)),
        )

    @classmethod
    def of_vocabulary(cls, vocabulary: Any) -> CTCLabels:
        """The labels of a training vocabulary (`data_pipelines.Vocabulary`, HF default names)."""
        return cls.from_vocab({t: i for i, t in enumerate(vocabulary.tokens)})

    def __len__(self) -> int:
        return len(self.tokens)

    def collapse(self, ids: Iterable[int]) -> list[tuple[int, int, int]]:
        """CTC collapse of per-frame ids: (id, first frame, end frame) per kept token.

        Repeats merge, then blanks are dropped (transformers' `convert_tokens_to_string` order).
        """
        out: list[tuple[int, int, int]] = []
        prev, start = None, 0
        ids = [int(i) for i in ids]
        for t, i in enumerate([*ids, -1]):
            if i != prev:
                if prev is not None and prev != self.blank_id:
                    out.append((prev, start, t))
                prev, start = i, t
        return out

    def token_text(self, i: int) -> str:
        """The text of one kept token: the delimiter is a space, other tokens their name."""
        return " " if i == self.delimiter_id else self.tokens[i]

    def text(self, token_ids: Iterable[int]) -> str:
        """Collapsed token ids -> transcript, as `Wav2Vec2CTCTokenizer.decode` joins them.

        Blanks are dropped, the delimiter becomes a space, other tokens (specials included, as
        transformers' `batch_decode` keeps them) are joined, the ends stripped, lower-cased when
        the tokenizer says so.
        """
        text = "".join(self.token_text(i) for i in token_ids if i != self.blank_id).strip()
        return text.lower() if self.do_lower_case else text

    def decode_ctc(self, ids: Iterable[int]) -> str:
        """Greedy CTC transcript of per-frame ids [frames] (== `Wav2Vec2Processor.batch_decode`)."""
        return self.text(i for i, _, _ in self.collapse(ids))

    def pyctcdecode_labels(self) -> list[str]:
        """The label list in id order as pyctcdecode's `alphabet.json` wants it.

        Exactly one "" (the blank), " " for the delimiter, pyctcdecode's unknown sign for the unk
        token and each other special token under its own name (unique, so pyctcdecode never
        reports duplicate entries), whatever ids the vocabulary gives them.
        """
        labels = []
        for i, token in enumerate(self.tokens):
            if i == self.blank_id:
                labels.append("")
            elif i == self.delimiter_id:
                labels.append(" ")
            elif i in self.special_ids and token in ("<unk>", "[UNK]"):
                labels.append(PYCTCDECODE_UNK)
            else:
                labels.append(token)
        return labels


def _token_name(token: Any) -> str | None:
    """A tokenizer setting's token name (tokenizer_config.json may hold an AddedToken dict)."""
    if isinstance(token, Mapping):
        return token.get("content")
    return token


@dataclasses.dataclass
class ErrorCounts:
    """Edit counts of a set of utterances; rates are totals over the set (corpus-level)."""

    word_errors: int = 0
    words: int = 0
    char_errors: int = 0
    chars: int = 0
    utterances: int = 0

    def add(self, other: ErrorCounts) -> None:
        """Accumulates another set's counts."""
        self.word_errors += other.word_errors
        self.words += other.words
        self.char_errors += other.char_errors
        self.chars += other.chars
        self.utterances += other.utterances

    @property
    def wer(self) -> float:
        """Word error rate (NaN when there are no reference words)."""
        return self.word_errors / self.words if self.words else float("nan")

    @property
    def cer(self) -> float:
        """Character error rate (NaN when there are no reference characters)."""
        return self.char_errors / self.chars if self.chars else float("nan")

    def as_dict(self) -> dict[str, float]:
        """JSON-friendly summary: rates and the counts behind them."""
        return {
            "wer": self.wer,
            "cer": self.cer,
            "word_errors": self.word_errors,
            "words": self.words,
            "char_errors": self.char_errors,
            "chars": self.chars,
            "utterances": self.utterances,
        }


def error_counts(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorCounts:
    """Word and character edit counts with jiwer (Levenshtein alignment).

    Empty references carry no words or characters to get wrong and are left out (jiwer rejects
    them); an empty hypothesis counts every reference word/character as deleted.
    """
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    pairs = [(r, h) for r, h in zip(references, hypotheses) if r.strip()]
    counts = ErrorCounts(utterances=len(pairs))
    if not pairs:
        return counts
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    counts.word_errors = words.substitutions + words.deletions + words.insertions
    counts.words = words.substitutions + words.deletions + words.hits
    counts.char_errors = chars.substitutions + chars.deletions + chars.insertions
    counts.chars = chars.substitutions + chars.deletions + chars.hits
    return counts


def error_rates_by_language(
    references: Sequence[str], hypotheses: Sequence[str], languages: Sequence[str]
) -> dict[str, ErrorCounts]:
    """`error_counts` per language plus an "all" entry over every utterance."""
    groups: dict[str, tuple[list[str], list[str]]] = {}
    for ref, hyp, lang in zip(references, hypotheses, languages, strict=True):
        refs, hyps = groups.setdefault(lang, ([], []))
        refs.append(ref)
        hyps.append(hyp)
    out = {lang: error_counts(*groups[lang]) for lang in sorted(groups)}
    total = ErrorCounts()
    for counts in out.values():
        total.add(counts)
    out["all"] = total
    return out


def write_report(
    path: str,
    per_language: Mapping[str, ErrorCounts],
    *,
    step: int | None = None,
    examples: Iterable[Mapping[str, str]] = (),
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Writes a JSON report: rates and counts per language, a few example transcripts, extras."""
    import json

    from xlsr_jax import fileio

    report: dict[str, Any] = {
        "step": step,
        "per_language": {k: v.as_dict() for k, v in per_language.items()},
        "examples": list(examples),
    }
    if extra:
        report.update(extra)
    fileio.write_text(path, json.dumps(report, indent=2, ensure_ascii=False))  # local or gs://


def translation_scores_by_pair(
    references: Sequence[str], hypotheses: Sequence[str], pairs: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Corpus BLEU and chrF (sacrebleu, its default 13a tokenisation, as CoVoST-2 reports) per
    language pair ("es_en") plus "all", with the sentence counts behind them.

    Raises:
      ImportError naming the `translation` extra when sacrebleu is missing.
    """
    try:
        import sacrebleu
    except ImportError as e:
        raise ImportError("BLEU needs sacrebleu: pip install -e '.[translation]'") from e

    groups: dict[str, tuple[list[str], list[str]]] = {}
    for ref, hyp, pair in zip(references, hypotheses, pairs, strict=True):
        for key in (pair, "all"):
            refs, hyps = groups.setdefault(key, ([], []))
            refs.append(ref)
            hyps.append(hyp)
    out = {}
    for key in sorted(groups):
        refs, hyps = groups[key]
        out[key] = {
            "bleu": float(sacrebleu.corpus_bleu(hyps, [refs]).score),
            "chrf": float(sacrebleu.corpus_chrf(hyps, [refs]).score),
            "sentences": len(refs),
        }
    return out
