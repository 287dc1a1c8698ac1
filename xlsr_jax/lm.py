"""CTC beam search with a word n-gram language model (flashlight-text), and the LM files around it.

The decoder is flashlight's (`flashlight-text`, the `lm` extra): the one behind torchaudio's
`ctc_decoder` and fairseq's `W2lKenLMDecoder`, which produced the wav2vec 2.0 / XLS-R papers'
"with LM" numbers. Its wheels carry KenLM, so ARPA and binary KenLM models load without a
compiler. A word LM is used with a lexicon (word -> spelling in the vocabulary's tokens, ending
with the word delimiter), as in fairseq: words outside the lexicon are not produced. Without a
`--lexicon` file the lexicon is the LM's own unigram list (ARPA files); a binary LM needs one.
Without an LM the search is lexicon-free (beam search on the acoustic scores alone).

  alpha: LM weight (flashlight `lm_weight`); beta: score added per word (`word_score`),
  pyctcdecode's names for the same two knobs.

The label list comes from `decoding.CTCLabels` (by token name). Without an LM the transcript is
built from the best path's frame tokens with the same function as greedy decoding, so a beam of 1
gives the greedy transcript; with an LM it is the search's finished lexicon words (one extra
frame that is surely a delimiter lets the last word finish), with alpha = beta = 0 and a beam of
1 again the greedy transcript where that is made of lexicon words.

`write_arpa` makes a small word n-gram (interpolated absolute discounting, Ney, Essen & Kneser
1994) in ARPA format from transcripts, for tests and the demo; real LMs come from KenLM's `lmplz`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from xlsr_jax.decoding import CTCLabels

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
# Absolute discount; 0.5-0.8 is the usual range for small counts (Chen & Goodman 1998, Table 3).
DISCOUNT = 0.7
# Decoder defaults: torchaudio.models.decoder.ctc_decoder's (beam_threshold 50, beam_size_token =
# vocabulary size); alpha/beta start values as in pyctcdecode's defaults (0.5, 1.0).
DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_BEAM_WIDTH, BEAM_THRESHOLD = 0.5, 1.0, 100, 50.0


def available() -> tuple[bool, str]:
    """(True, "") when flashlight-text imports, else (False, how to install it)."""
    try:
        import flashlight.lib.text.decoder  # noqa: F401
    except ImportError:
        return False, "beam search needs flashlight-text: pip install 'xlsr-jax[lm]' (or flashlight-text)"
    return True, ""


# ---------------------------------------------------------------------------------------------
# ARPA files


def count_ngrams(sentences: Iterable[str], order: int) -> list[collections.Counter]:
    """n-gram counts of whitespace-split sentences with <s> ... </s>: one Counter per order."""
    counts = [collections.Counter() for _ in range(order)]
    for sentence in sentences:
        words = [BOS, *sentence.split(), EOS]
        for n in range(1, order + 1):
            for i in range(len(words) - n + 1):
                gram = tuple(words[i : i + n])
                if gram != (BOS,):
                    counts[n - 1][gram] += 1
    return counts


def write_arpa(sentences: Iterable[str], path: str, order: int = 3, discount: float = DISCOUNT) -> dict[str, int]:
    """Writes a word n-gram LM in ARPA format (log10 probabilities and back-off weights).

    Interpolated absolute discounting: p(w|h) = max(c(h w) - D, 0) / c(h) + b(h) p(w|h'), with
    b(h) = D * |{w: c(h w) > 0}| / c(h); unigrams interpolate with a uniform distribution over the
    words plus <unk>. Written in ARPA back-off form, every listed n-gram carries the interpolated
    probability and its context's b(h), so KenLM's back-off recursion gives the same p(w|h).

    Args:
      sentences: normalised transcripts, words separated by spaces.
      path: output file.
      order: highest n.
      discount: D in (0, 1).
    Returns:
      {"1": n unigrams, ..., str(order): n}: the counts written in the header.
    Raises:
      ValueError: no words, or order < 1.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    counts = count_ngrams(sentences, order)
    if not any(gram != (EOS,) for gram in counts[0]):
        raise ValueError("write_arpa: no words in the sentences")
    # Context totals and distinct followers per context, for every order.
    totals = collections.Counter()
    followers = collections.Counter()
    for level in counts:
        for gram, c in level.items():
            totals[gram[:-1]] += c
            followers[gram[:-1]] += 1
    vocab = sorted({g[0] for g in counts[0]} | {UNK})
    uniform = 1.0 / len(vocab)

    def backoff(context: tuple[str, ...]) -> float:
        return discount * followers[context] / totals[context] if totals[context] else 1.0

    probs: list[dict[tuple[str, ...], float]] = []
    unigram = {}
    lam = backoff(())
    for w in vocab:
        unigram[(w,)] = max(counts[0].get((w,), 0) - discount, 0) / totals[()] + lam * uniform
    probs.append(unigram)
    for n in range(2, order + 1):
        level = {}
        for gram, c in counts[n - 1].items():
            context = gram[:-1]
            level[gram] = (c - discount) / totals[context] + backoff(context) * _prob(probs, gram[1:], backoff)
        probs.append(level)

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sizes = {"1": len(probs[0]) + 1}  # + <s>
    sizes.update({str(n + 1): len(probs[n]) for n in range(1, order)})
    with open(path, "w", encoding="utf-8") as f:
        f.write("\\data\\\n")
        for n in range(order):
            f.write(f"ngram {n + 1}={sizes[str(n + 1)]}\n")
        for n in range(order):
            f.write(f"\n\\{n + 1}-grams:\n")
            rows = sorted(probs[n].items())
            if n == 0:
                rows = [((BOS,), None), *rows]
            for gram, p in rows:
                logp = -99.0 if p is None else math.log10(p)  # <s> is never predicted
                line = f"{logp:.6f}\t{' '.join(gram)}"
                if n + 1 < order and gram[-1] != EOS:
                    line += f"\t{math.log10(backoff(gram)):.6f}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")
    return sizes


def _prob(probs: list[dict], gram: tuple[str, ...], backoff) -> float:
    """p(gram[-1] | gram[:-1]) from the lower orders already computed (back-off recursion)."""
    level = probs[len(gram) - 1]
    if gram in level:
        return level[gram]
    return backoff(gram[:-1]) * _prob(probs, gram[1:], backoff)


def arpa_unigrams(path: str) -> list[str]:
    """The words of an ARPA file's 1-gram section (without <s>, </s>, <unk>).

    Raises:
      ValueError: the file has no `\\1-grams:` section (e.g. a binary KenLM model; give a lexicon).
    """
    words, inside = [], False
    with open(path, encoding="utf-8", errors="strict") as f:
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                inside = True
                continue
            if inside:
                if not line:
                    continue
                if line.startswith("\\"):
                    break
                word = line.split("\t")[1] if "\t" in line else line.split()[1]
                if word not in (BOS, EOS, UNK):
                    words.append(word)
    if not inside:
        raise ValueError(f"{path}: no \\1-grams: section (a binary KenLM model needs --lexicon)")
    return words


# ---------------------------------------------------------------------------------------------
# Lexicon


def spell(word: str, labels: CTCLabels) -> list[int] | None:
    """The token ids spelling `word` then the word delimiter; None if a character is not in the
    vocabulary. Longest vocabulary token first (multi-character tokens), upper case tried for a
    lower-casing tokenizer (its vocabulary holds capitals)."""
    index = {t: i for i, t in enumerate(labels.tokens) if i not in labels.special_ids}
    longest = max(len(t) for t in index)
    ids, pos = [], 0
    while pos < len(word):
        for size in range(min(longest, len(word) - pos), 0, -1):
            piece = word[pos : pos + size]
            i = index.get(piece, index.get(piece.upper()) if labels.do_lower_case else None)
            if i is not None:
                ids.append(i)
                pos += size
                break
        else:
            return None
    if labels.delimiter_id is not None:
        ids.append(labels.delimiter_id)
    return ids


def read_lexicon(path: str) -> list[str]:
    """Words of a lexicon file: one per line, the word first (fairseq/flashlight format; the
    spelling columns are rebuilt from the vocabulary)."""
    with open(path, encoding="utf-8") as f:
        return [line.split()[0] for line in f if line.strip()]


def write_lexicon(words: Iterable[str], labels: CTCLabels, path: str) -> int:
    """Writes `word t o k e n s |` lines (flashlight/fairseq lexicon); returns the words written."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for word in words:
            ids = spell(word, labels)
            if ids:
                f.write(word + "\t" + " ".join(labels.tokens[i] for i in ids) + "\n")
                n += 1
    return n


# ---------------------------------------------------------------------------------------------
# Decoder


@dataclasses.dataclass
class Hypothesis:
    """One decoded utterance: transcript, kept tokens as (id, start frame, end frame), score."""

    text: str
    tokens: list[tuple[int, int, int]]
    score: float


class BeamSearchDecoder:
    """flashlight CTC beam search for one vocabulary, with an optional KenLM word LM."""

    def __init__(
        self,
        labels: CTCLabels,
        lm: str | None = None,
        *,
        lexicon: str | None = None,
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
        beam_width: int = DEFAULT_BEAM_WIDTH,
        beam_threshold: float = BEAM_THRESHOLD,
    ):
        """Builds the decoder.

        Args:
          labels: the vocabulary by name (`decoding.CTCLabels`).
          lm: KenLM model (ARPA or binary); None = lexicon-free search without an LM.
          lexicon: words the search may produce (one per line, word first); default the ARPA
            file's unigrams.
          alpha, beta: LM weight and per-word score.
          beam_width: hypotheses kept per frame.
          beam_threshold: hypotheses this far below the best are dropped.
        Raises:
          ImportError: flashlight-text is not installed.
          ValueError: an LM or lexicon that cannot be used (one line naming the file).
        """
        ok, reason = available()
        if not ok:
            raise ImportError(reason)
        if beam_width < 1:
            raise ValueError(f"beam_width must be at least 1, got {beam_width}")
        from flashlight.lib.text import decoder as fl
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        self.labels = labels
        self.beam_width = beam_width
        blank = labels.blank_id
        # flashlight's "silence" is the word boundary; with no delimiter the blank stands in.
        silence = labels.delimiter_id if labels.delimiter_id is not None else blank
        vocab_size = len(labels)
        self._lexicon = lm is not None
        if lm is None:
            options = fl.LexiconFreeDecoderOptions(
                beam_size=beam_width,
                beam_size_token=vocab_size,
                beam_threshold=beam_threshold,
                lm_weight=alpha,
                sil_score=0.0,
                log_add=False,
                criterion_type=fl.CriterionType.CTC,
            )
            self._decoder = fl.LexiconFreeDecoder(options, fl.ZeroLM(), silence, blank, [])
            return
        if not os.path.isfile(lm):
            raise ValueError(f"{lm}: no such LM file")
        words = read_lexicon(lexicon) if lexicon else arpa_unigrams(lm)
        spelled = {w: s for w in dict.fromkeys(words) if (s := spell(w, labels))}
        if not spelled:
            raise ValueError(f"{lexicon or lm}: no word of the lexicon can be spelled with the model's vocabulary")
        self.lexicon_size, self.lexicon_skipped = len(spelled), len(set(words)) - len(spelled)
        word_dict = Dictionary([*spelled, UNK])
        try:
            kenlm = KenLM(lm, word_dict)
        except Exception as e:  # KenLM raises its own C++ exception types
            raise ValueError(f"{lm}: KenLM cannot read it ({e})") from e
        trie = fl.Trie(vocab_size, silence)
        start = kenlm.start(False)
        for word, ids in spelled.items():
            index = word_dict.get_index(word)
            _, score = kenlm.score(start, index)
            trie.insert(ids, index, score)
        trie.smear(fl.SmearingMode.MAX)
        options = fl.LexiconDecoderOptions(
            beam_size=beam_width,
            beam_size_token=vocab_size,
            beam_threshold=beam_threshold,
            lm_weight=alpha,
            word_score=beta,
            unk_score=-math.inf,
            sil_score=0.0,
            log_add=False,
            criterion_type=fl.CriterionType.CTC,
        )
        self._decoder = fl.LexiconDecoder(options, trie, kenlm, silence, blank, word_dict.get_index(UNK), [], False)
        self._keepalive = (kenlm, trie)  # the C++ decoder holds raw references
        self._word_dict = word_dict

    def decode_one(self, log_probs: np.ndarray) -> Hypothesis:
        """Best hypothesis of one utterance; log_probs float [frames, vocab] (no padding)."""
        emissions = np.ascontiguousarray(log_probs, dtype=np.float32)
        frames, vocab = emissions.shape
        if frames == 0:
            return Hypothesis("", [], 0.0)
        if self._lexicon and self.labels.delimiter_id is not None:
            # Lexicon words end with the delimiter, which a transcript's last word lacks: one
            # extra frame that is surely a delimiter lets the search finish that word.
            end = np.full((1, vocab), -1e4, np.float32)
            end[0, self.labels.delimiter_id] = 0.0
            emissions = np.ascontiguousarray(np.concatenate([emissions, end]))
        results = self._decoder.decode(emissions.ctypes.data, len(emissions), vocab)
        if not results:  # every path pruned (no lexicon word fits the frames)
            return Hypothesis("", [], -math.inf)
        best = results[0]
        path = list(best.tokens)[1:-1]  # flashlight pads the path with one silence each side
        tokens = self.labels.collapse(path)
        if not self._lexicon:
            return Hypothesis(self.labels.text(i for i, _, _ in tokens), tokens, float(best.score))
        # The lexicon search's words are the finished ones; the token path may end inside a word
        # the search had not finished (dropped), and may hold silences between words.
        words = [self._word_dict.get_entry(w) for w in best.words if w >= 0]
        kept, finished, in_word = [], 0, False
        tokens = [(i, start, min(end, frames)) for i, start, end in tokens if start < frames]
        for tok in tokens:
            if finished == len(words) and self.labels.delimiter_id is not None:
                break
            kept.append(tok)
            if tok[0] == self.labels.delimiter_id:
                finished, in_word = finished + in_word, False
            else:
                in_word = True
        return Hypothesis(" ".join(words), kept, float(best.score))

    def decode(self, log_probs: np.ndarray, frame_padding: np.ndarray) -> list[str]:
        """Transcripts of a batch: log_probs float [batch, frames, vocab], frame_padding bool
        [batch, frames] True at padding (dropped before decoding)."""
        return [self.decode_one(lp[~pad]).text for lp, pad in zip(np.asarray(log_probs), np.asarray(frame_padding))]


# ---------------------------------------------------------------------------------------------
# transformers' Wav2Vec2ProcessorWithLM layout


def write_processor_lm_files(out_folder: str, labels: CTCLabels, lm: str, *, alpha: float, beta: float) -> None:
    """Adds `alphabet.json` and `language_model/` to a transformers folder, the layout
    `Wav2Vec2ProcessorWithLM.from_pretrained` loads (pyctcdecode's `save_to_dir`).

    language_model/ holds the KenLM file under its own name, `unigrams.txt` (the ARPA's words,
    one per line) and `attrs.json` (alpha, beta and pyctcdecode's default unk offset / partial
    token score).
    """
    import shutil

    lm_dir = os.path.join(out_folder, "language_model")
    os.makedirs(lm_dir, exist_ok=True)
    with open(os.path.join(out_folder, "alphabet.json"), "w", encoding="utf-8") as f:
        json.dump({"labels": labels.pyctcdecode_labels(), "is_bpe": False}, f, ensure_ascii=False)
    shutil.copyfile(lm, os.path.join(lm_dir, os.path.basename(lm)))
    try:
        words = arpa_unigrams(lm)
    except (ValueError, UnicodeDecodeError):
        words = []  # binary model: pyctcdecode then reads no unigram list (it warns, still loads)
    if words:
        with open(os.path.join(lm_dir, "unigrams.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(words) + "\n")
    # pyctcdecode/language_model.py: DEFAULT_UNK_LOGP_OFFSET -10.0, DEFAULT_SCORE_LM_BOUNDARY True.
    attrs = {"alpha": alpha, "beta": beta, "unk_score_offset": -10.0, "score_boundary": True}
    with open(os.path.join(lm_dir, "attrs.json"), "w", encoding="utf-8") as f:
        json.dump(attrs, f)


def tune(
    decode_fn,
    references: Sequence[str],
    alphas: Sequence[float],
    betas: Sequence[float],
) -> list[dict[str, float]]:
    """Grid search of alpha/beta: WER of `decode_fn(alpha, beta) -> hypotheses` per pair, best first."""
    from xlsr_jax.decoding import error_counts

    rows = []
    for a in alphas:
        for b in betas:
            counts = error_counts(references, decode_fn(a, b))
            rows.append({"alpha": a, "beta": b, "wer": counts.wer, "cer": counts.cer})
    return sorted(rows, key=lambda r: (r["wer"], r["cer"]))


# ---------------------------------------------------------------------------------------------
# A small LM from a run's training transcripts


def training_sentences(data_cfg: Any) -> list[str]:
    """The train split's transcripts of a data config, normalised as the CTC labels are
    (`Vocabulary.normalize`, per language), for `write_arpa`."""
    import data_pipelines
    from data_pipelines import pipeline

    vocabulary = data_pipelines.build_vocabulary(data_cfg)
    train = pipeline.load_sources(data_cfg, "train")
    keep = set(pipeline.languages(data_cfg, lambda: train))
    sentences = []
    for src in train:
        if src.transcripts is not None:
            sentences += [
                vocabulary.normalize(t, lang) for t, lang in zip(src.transcripts, src.languages) if lang in keep
            ]
    return sentences


def main(argv: list[str] | None = None) -> int:
    """`python -m xlsr_jax.lm --ckpt RUN --out LM.arpa [--order 3]`: an ARPA word n-gram of a CTC
    run's training transcripts (for tests and the demo; real LMs come from KenLM's lmplz)."""
    import argparse
    import sys

    import ml_collections

    from xlsr_jax import checkpointing

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--ckpt", required=True, help="a CTC training run's checkpoints/ (its data config is used)")
    parser.add_argument("--out", required=True, help="ARPA file to write")
    parser.add_argument("--order", type=int, default=3, help="highest n-gram order")
    args = parser.parse_args(argv)
    try:
        config = ml_collections.ConfigDict(checkpointing.read_config(args.ckpt))
        sizes = write_arpa(training_sentences(config.data), args.out, order=args.order)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}\t" + " ".join(f"{n}-grams={c}" for n, c in sizes.items()))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
