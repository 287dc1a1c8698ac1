"""Forced alignment: where each word and character of a known transcript lies in a recording.

    python -m xlsr_jax.align --ckpt DIR AUDIO "TRANSCRIPT" [--ctm out.ctm] [--language es]
    python -m xlsr_jax.align --ckpt DIR --manifest list.tsv [--ctm out.ctm]

Prints one JSON line per file: {"path", "transcript", "score", "words": [{"word", "start",
"end", "score"}], "chars": [...]}, times in seconds; `--ctm` also writes a NIST CTM file
(`<file> 1 <start> <duration> <word> <confidence>` per word). The manifest is a TSV of
`path<TAB>transcript` lines. A file that cannot be aligned (unreadable audio, characters the
vocabulary lacks, a transcript needing more frames than the audio has) is named on stderr with the
reason and skipped; the exit status is then 1.

The alignment is the CTC Viterbi path (torchaudio's `forced_align`, Kürzinger et al. 2020's
CTC segmentation without its confidence windows): the most likely frame-level path through
blank, t1, blank, t2, ..., blank that emits exactly the transcript's tokens, run with
`jax.lax.scan` inside `jit` (lengths padded to buckets, so few compilations). The transcript is
normalised as training transcripts are (`data_pipelines.normalize_text` for `--language`) and
spelled with the model's vocabulary by token name (`decoding.CTCLabels`, the delimiter between
words). A token's score is the mean log-probability of its frames on the path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

NEG_INF = -1e30  # log(0) that stays finite in float32 sums
FRAME_BUCKET = 50  # frames are padded to multiples of this (1 s at 50 frames/s)
TOKEN_BUCKET = 16  # transcript tokens are padded to multiples of this


class AlignmentError(ValueError):
    """A transcript that cannot be aligned to its audio (the message says why)."""


@jax.jit
def _viterbi_padded(log_probs, num_frames, targets, num_targets, blank):
    """Best CTC path of padded inputs.

    Args:
      log_probs: float32 [T, V]; frames from num_frames on are ignored.
      num_frames: int32 scalar.
      targets: int32 [L]; entries from num_targets on are ignored.
      num_targets: int32 scalar.
      blank: int32 scalar.
    Returns:
      (states int32 [T]: index into the extended sequence [blank, t1, blank, ..., tL, blank] at
       each frame (valid for t < num_frames), score float32: the path's total log-probability).
    """
    frames, _ = log_probs.shape
    length = targets.shape[0]
    ext = jnp.full((2 * length + 1,), blank, jnp.int32).at[1::2].set(targets)
    size = 2 * num_targets + 1
    states = jnp.arange(2 * length + 1)
    valid = states < size
    # Skipping a blank (s-2 -> s) is allowed onto a non-blank token that differs from s-2's.
    prev2 = jnp.concatenate([jnp.full((2,), blank, jnp.int32), ext[:-2]])
    can_skip = (ext != blank) & (ext != prev2) & (states >= 2)
    emit0 = log_probs[0, ext]
    alpha0 = jnp.where((states < 2) & valid, emit0, NEG_INF)

    def step(alpha, t):
        stay = alpha
        move = jnp.concatenate([jnp.full((1,), NEG_INF), alpha[:-1]])
        skip = jnp.where(can_skip, jnp.concatenate([jnp.full((2,), NEG_INF), alpha[:-2]]), NEG_INF)
        options = jnp.stack([stay, move, skip])  # [3, S]
        choice = jnp.argmax(options, axis=0).astype(jnp.int8)
        best = jnp.max(options, axis=0) + log_probs[t, ext]
        best = jnp.where(valid, best, NEG_INF)
        live = t < num_frames
        return jnp.where(live, best, alpha), jnp.where(live, choice, jnp.int8(0))

    alpha, choices = jax.lax.scan(step, alpha0, jnp.arange(1, frames))
    # The path ends in the last token or the final blank.
    end_scores = jnp.where((states == size - 1) | (states == size - 2), alpha, NEG_INF)
    last = jnp.argmax(end_scores).astype(jnp.int32)
    score = end_scores[last]

    def back(state, t):
        # choices[t - 1] says how frame t's state was reached from frame t-1's.
        c = choices[t - 1].astype(jnp.int32)[state]
        live = t < num_frames
        prev = jnp.where(live, state - c, state)
        return prev, state

    first, path_rev = jax.lax.scan(back, last, jnp.arange(frames - 1, 0, -1))
    path = jnp.concatenate([first[None], path_rev[::-1]])
    return path, score


def viterbi(log_probs: np.ndarray, targets: Sequence[int], blank: int) -> tuple[np.ndarray, float]:
    """CTC forced alignment of one utterance.

    Args:
      log_probs: float [T, V] log-softmax outputs.
      targets: token ids [L] of the transcript (no blanks).
      blank: the blank id.
    Returns:
      (states int [T]: extended-sequence index per frame (odd = token (s - 1) // 2, even =
       blank), the path's log-probability).
    Raises:
      AlignmentError: the transcript needs more frames than T (one per token, plus one blank
        between equal neighbours).
    """
    frames = len(log_probs)
    targets = [int(t) for t in targets]
    needed = len(targets) + sum(a == b for a, b in zip(targets, targets[1:]))
    if needed > frames or not targets:
        raise AlignmentError(
            f"the transcript needs {needed} frames but the audio has {frames}" if targets else "empty transcript"
        )
    t_pad = -(-frames // FRAME_BUCKET) * FRAME_BUCKET
    l_pad = -(-len(targets) // TOKEN_BUCKET) * TOKEN_BUCKET
    lp = np.full((t_pad, log_probs.shape[1]), NEG_INF, np.float32)
    lp[:frames] = log_probs
    tg = np.zeros((l_pad,), np.int32)
    tg[: len(targets)] = targets
    path, score = _viterbi_padded(jnp.asarray(lp), jnp.int32(frames), jnp.asarray(tg), jnp.int32(len(targets)), blank)
    return np.asarray(path)[:frames], float(score)


@dataclasses.dataclass
class Segment:
    """A token of the transcript on the path: frames [start, end), mean log-probability."""

    index: int
    start: int
    end: int
    score: float


def token_segments(states: np.ndarray, log_probs: np.ndarray, targets: Sequence[int]) -> list[Segment]:
    """Frames of each transcript token from a Viterbi path (blank frames belong to no token)."""
    segments: dict[int, list[int]] = {}
    for t, s in enumerate(states):
        if s % 2 == 1:
            segments.setdefault((int(s) - 1) // 2, []).append(t)
    out = []
    for i in range(len(targets)):
        frames = segments[i]
        score = float(np.mean(log_probs[frames, targets[i]]))
        out.append(Segment(i, frames[0], frames[-1] + 1, score))
    return out


def spell_transcript(text: str, labels: Any) -> tuple[list[int], list[tuple[str, int, int]]]:
    """Token ids of a transcript and its words as (word, first token, end token).

    Words are spelled with `lm.spell` (longest vocabulary token first); the delimiter goes
    between words when the vocabulary has one.

    Raises:
      AlignmentError: characters the vocabulary does not have (named).
    """
    from xlsr_jax import lm

    ids: list[int] = []
    words = []
    for n, word in enumerate(text.split()):
        spelled = lm.spell(word, labels)
        if spelled is None:
            missing = sorted({c for c in word if lm.spell(c, labels) is None})
            raise AlignmentError(f"characters not in the model's vocabulary: {''.join(missing)!r} (in {word!r})")
        if labels.delimiter_id is not None:
            spelled = spelled[:-1]  # spell() ends words with the delimiter
            if n:
                ids.append(labels.delimiter_id)
        words.append((word, len(ids), len(ids) + len(spelled)))
        ids += spelled
    return ids, words


def align(emissions: Any, text: str, labels: Any, hop: int, rate: int) -> dict[str, Any]:
    """Aligns one transcript to one file's outputs (`transcribe.Emissions`).

    Returns:
      {"transcript", "score", "words": [{"word", "start", "end", "score"}], "chars": [{"char",
       "start", "end", "score"}]}; times in seconds (a frame is `hop` samples).
    Raises:
      AlignmentError: see `spell_transcript` and `viterbi`.
    """
    ids, words = spell_transcript(text, labels)
    states, score = viterbi(emissions.log_probs, ids, labels.blank_id)
    segments = token_segments(states, emissions.log_probs, ids)
    times = emissions.times

    def seconds(first: Segment, last: Segment) -> tuple[float, float]:
        return round(times[first.start] / rate, 3), round((times[last.end - 1] + hop) / rate, 3)

    chars = []
    for seg in segments:
        if ids[seg.index] != labels.delimiter_id:
            start, end = seconds(seg, seg)
            char = labels.tokens[ids[seg.index]]
            chars.append({"char": char, "start": start, "end": end, "score": round(seg.score, 4)})
    out_words = []
    for word, first, end in words:
        start, stop = seconds(segments[first], segments[end - 1])
        mean = float(np.mean([s.score for s in segments[first:end]]))
        out_words.append({"word": word, "start": start, "end": stop, "score": round(mean, 4)})
    return {"transcript": text, "score": round(score, 4), "words": out_words, "chars": chars}


def ctm_lines(name: str, result: dict[str, Any]) -> list[str]:
    """NIST CTM rows of one file's words: `name 1 start duration word confidence`."""
    return [
        f"{name} 1 {w['start']:.3f} {w['end'] - w['start']:.3f} {w['word']} {float(np.exp(w['score'])):.3f}"
        for w in result["words"]
    ]


def read_manifest(path: str) -> list[tuple[str, str]]:
    """`path<TAB>transcript` lines (blank lines skipped)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if "\t" not in line:
                raise ValueError(f"{path}:{n}: expected 'audio path<TAB>transcript'")
            audio, text = line.rstrip("\n").split("\t", 1)
            rows.append((audio, text))
    return rows


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 1 when some file could not be aligned."""
    import os

    import data_pipelines
    from xlsr_jax.transcribe import Transcriber

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="exported CTC checkpoint or training run")
    parser.add_argument("--manifest", help="TSV of audio path<TAB>transcript lines")
    parser.add_argument("--ctm", help="also write the word alignments as a CTM file here")
    parser.add_argument("--language", default="", help="language code for transcript normalisation")
    parser.add_argument("--batch_size", type=int, default=8, help="files per forward pass")
    parser.add_argument("inputs", nargs="*", help="AUDIO TRANSCRIPT (without --manifest)")
    args = parser.parse_args(argv)
    if args.manifest:
        if args.inputs:
            parser.error("give --manifest or AUDIO TRANSCRIPT, not both")
        try:
            rows = read_manifest(args.manifest)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    elif len(args.inputs) == 2:
        rows = [tuple(args.inputs)]
    else:
        parser.error("expected AUDIO TRANSCRIPT or --manifest FILE")
    transcriber = Transcriber(args.ckpt, batch_size=args.batch_size)
    outputs, errors = transcriber.emissions([audio for audio, _ in rows])
    rate = int(transcriber.loaded.audio.get("sampling_rate", 16000))
    ctm: list[str] = []
    for (audio, text), emissions in zip(rows, outputs):
        if emissions is None:
            continue  # the reading error is in `errors`
        normalised = data_pipelines.normalize_text(text, args.language)
        try:
            result = align(emissions, normalised, transcriber.labels, transcriber.hop, rate)
        except AlignmentError as e:
            errors.append(f"{audio}: cannot align: {e}")
            continue
        print(json.dumps({"path": audio, **result}, ensure_ascii=False), flush=True)
        ctm += ctm_lines(os.path.splitext(os.path.basename(audio))[0], result)
    if args.ctm:
        with open(args.ctm, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in ctm))
    from xlsr_jax import inputs

    return inputs.report_skipped(errors, len(rows))


if __name__ == "__main__":
    sys.exit(main())
