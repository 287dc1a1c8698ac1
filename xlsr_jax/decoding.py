"""CTC decoding and error rates: greedy decoding, WER/CER (jiwer), optional n-gram beam search;
BLEU and chrF of translations (sacrebleu).

Greedy decoding is the metric of the wav2vec 2.0 / XLS-R papers' "no LM" columns: argmax per
frame, collapse repeats, drop blanks. Error rates are corpus-level (total edits / total reference
words or characters, as jiwer and fairseq's `wer` compute them), overall and per language.

Beam search with an n-gram language model uses pyctcdecode (+ kenlm for the LM) when they are
installed; they are optional, `beam_search_available()` says whether they are and
`BeamSearchDecoder` raises an ImportError naming the missing package otherwise.
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


def beam_search_available() -> tuple[bool, str]:
    """(True, "") when pyctcdecode is importable, else (False, reason)."""
    try:
        import pyctcdecode  # noqa: F401
    except ImportError:
        return False, "pyctcdecode is not installed (pip install pyctcdecode; kenlm for an n-gram LM)"
    return True, ""


class BeamSearchDecoder:
    """CTC prefix beam search with an optional KenLM n-gram (pyctcdecode), for one vocabulary.

    pyctcdecode wants the label list in id order with "" for the blank and " " for the word
    delimiter; our specials other than the blank never appear in transcripts, so they map to ""
    too (pyctcdecode drops empty labels from the output).
    """

    def __init__(
        self,
        vocabulary: Any,
        kenlm_model: str | None = None,
        *,
        alpha: float = 0.5,
        beta: float = 1.0,
        beam_width: int = 100,
    ):
        """Builds the decoder.

        Args:
          vocabulary: `data_pipelines.Vocabulary`.
          kenlm_model: path of an ARPA or binary KenLM model; None = beam search without an LM.
          alpha, beta: LM weight and word-insertion bonus (pyctcdecode's names).
          beam_width: hypotheses kept per frame.
        Raises:
          ImportError: pyctcdecode (or kenlm, when an LM is given) is not installed.
        """
        ok, reason = beam_search_available()
        if not ok:
            raise ImportError(reason)
        import pyctcdecode

        labels = []
        for i, token in enumerate(vocabulary.tokens):
            if token == "|":
                labels.append(" ")
            elif i == vocabulary.blank_id or token.startswith("<"):
                labels.append("")
            else:
                labels.append(token)
        if kenlm_model:
            try:
                import kenlm  # noqa: F401
            except ImportError as e:
                raise ImportError("an n-gram LM needs kenlm (pip install kenlm)") from e
        self._decoder = pyctcdecode.build_ctcdecoder(labels, kenlm_model_path=kenlm_model, alpha=alpha, beta=beta)
        self.beam_width = beam_width

    def decode(self, log_probs: np.ndarray, frame_padding: np.ndarray) -> list[str]:
        """Transcripts of a batch.

        Args:
          log_probs: float [batch, frames, vocab] log-softmax outputs.
          frame_padding: bool [batch, frames], True at padding (dropped before decoding).
        Returns:
          One string per row.
        """
        out = []
        for lp, pad in zip(np.asarray(log_probs, np.float32), np.asarray(frame_padding)):
            out.append(" ".join(self._decoder.decode(lp[~pad], beam_width=self.beam_width).split()))
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
