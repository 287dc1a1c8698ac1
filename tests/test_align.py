"""Forced alignment (`python -m xlsr_jax.align`): the jitted CTC Viterbi against an independent
NumPy one on random emissions, and word boundaries on joined demo clips with the shared CTC run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.finetune_testlib import ctc_run  # noqa: F401 - pytest fixture
from tests.test_recognise import _cli, _clips, joined_recording
from xlsr_jax import align


def numpy_viterbi(log_probs, targets, blank):
    """Textbook CTC Viterbi over [blank, t1, blank, ..., tL, blank]: (best score, states [T])."""
    ext = [blank]
    for t in targets:
        ext += [t, blank]
    frames, size = len(log_probs), len(ext)
    score = np.full((frames, size), -np.inf)
    back = np.zeros((frames, size), int)
    score[0, 0] = log_probs[0, ext[0]]
    score[0, 1] = log_probs[0, ext[1]]
    for t in range(1, frames):
        for s in range(size):
            options = [(score[t - 1, s], s)]
            if s >= 1:
                options.append((score[t - 1, s - 1], s - 1))
            if s >= 2 and ext[s] != blank and ext[s] != ext[s - 2]:
                options.append((score[t - 1, s - 2], s - 2))
            best, prev = max(options)
            score[t, s] = best + log_probs[t, ext[s]]
            back[t, s] = prev
    last = size - 1 if score[-1, size - 1] >= score[-1, size - 2] else size - 2
    states = [last]
    for t in range(frames - 1, 0, -1):
        states.append(back[t, states[-1]])
    return float(score[-1, last]), np.array(states[::-1])


@pytest.mark.parametrize("seed", range(6))
def test_viterbi_matches_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    vocab, frames = 7, int(rng.integers(20, 90))
    log_probs = np.log(rng.dirichlet(np.full(vocab, 0.5), size=frames)).astype(np.float32)
    length = int(rng.integers(1, frames // 3))
    targets = rng.integers(1, vocab, size=length)
    if seed % 2:
        targets[1::3] = targets[0::3][: len(targets[1::3])]  # repeated neighbours need a blank between
    expected_score, expected_states = numpy_viterbi(log_probs.astype(np.float64), list(targets), blank=0)
    states, score = align.viterbi(log_probs, targets, blank=0)
    assert score == pytest.approx(expected_score, rel=1e-5)
    np.testing.assert_array_equal(states, expected_states)
    # The path emits exactly the transcript.
    ext = np.zeros(2 * length + 1, int)
    ext[1::2] = targets
    ids = ext[states]
    kept = [i for n, i in enumerate(ids) if i != 0 and (n == 0 or states[n] != states[n - 1])]
    assert kept == list(targets)


def test_unalignable_transcripts_fail_with_a_reason():
    log_probs = np.log(np.full((5, 4), 0.25, np.float32))
    with pytest.raises(align.AlignmentError, match="needs 7 frames but the audio has 5"):
        align.viterbi(log_probs, [1, 1, 1, 1], blank=0)  # 4 tokens and 3 blanks between repeats
    from xlsr_jax import decoding

    labels = decoding.CTCLabels.from_vocab({t: i for i, t in enumerate(["<pad>", "<unk>", "|", "a", "b"])})
    assert align.spell_transcript("ab ba", labels) == ([3, 4, 2, 4, 3], [("ab", 0, 2), ("ba", 3, 5)])
    with pytest.raises(align.AlignmentError, match="'xz'"):
        align.spell_transcript("ab zax", labels)


@pytest.mark.slow  # the shared fine-tuning run of finetune_testlib
@pytest.mark.integration
def test_align_cli_word_boundaries_on_joined_clips(ctc_run, tmp_path):  # noqa: F811
    import data_pipelines

    clips = _clips("train")[:3]
    path = str(tmp_path / "joined.wav")
    spans = joined_recording(path, clips)
    transcript = " ".join(sentence for sentence, _, _ in spans)
    ctm = str(tmp_path / "out.ctm")
    bad = str(tmp_path / "bad.wav")
    with open(bad, "w") as f:
        f.write("not audio")
    manifest = tmp_path / "list.tsv"
    too_long = " ".join([clips[0][1]] * 4)  # ~100 characters for a 1.5 s clip's 75 frames
    manifest.write_text(f"{path}\t{transcript}\n{bad}\tx\n{clips[0][0]}\t{too_long}\n")
    # One file in the command's single form, then the batch form with an unreadable file and a
    # transcript longer than its audio.
    proc = _cli("xlsr_jax.align", "--ckpt", ctc_run["checkpoints"], "--language", "es", "--ctm", ctm, path, transcript)
    assert proc.returncode == 0, proc.stderr
    (row,) = [json.loads(line) for line in proc.stdout.splitlines()]
    words = row["words"]
    normalised = [data_pipelines.normalize_text(s, "es").split() for s, _, _ in spans]
    assert [w["word"] for w in words] == [w for sentence in normalised for w in sentence]
    # Each clip's first word starts at the clip's speech onset (within 60 ms); the recording's
    # speech ends where the last clip's does. The tiny model recognises its training clips alone
    # but only the first of several in a row (it has learned 60 utterances, not the language):
    # its log-probabilities after the first clip are near uniform, so the ends of inner clips
    # are left unchecked (the second clip's last word runs ~0.45 s into the following silence).
    first = 0
    for (clip, _), (sentence, start, _), clip_words in zip(clips, spans, normalised):
        onset, offset = _speech_bounds(clip)
        assert abs(words[first]["start"] - (start + onset)) <= 0.06, (sentence, words[first], start + onset)
        if first == 0:  # the first clip, whose emissions are confident: its end too
            last = words[len(clip_words) - 1]
            assert last["score"] > -0.5 and abs(last["end"] - (start + offset)) <= 0.06, (last, start + offset)
        first += len(clip_words)
    assert abs(words[-1]["end"] - (spans[-1][1] + offset)) <= 0.06
    with open(ctm, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) == len(words) and lines[0].split()[:2] == ["joined", "1"]
    assert float(lines[0].split()[2]) == words[0]["start"]

    proc = _cli("xlsr_jax.align", "--ckpt", ctc_run["checkpoints"], "--language", "es", "--manifest", str(manifest))
    assert proc.returncode == 1
    assert [json.loads(line)["path"] for line in proc.stdout.splitlines()] == [path]
    errors = proc.stderr.strip().splitlines()
    assert any("bad.wav" in e and "not audio: the file holds text" in e for e in errors)
    assert errors[-1] == "error: skipped 2 of 3 files"  # the policy of transcribe/identify/extract
    assert any(clips[0][0] in e and "cannot align" in e and "frames but the audio has" in e for e in errors)


def _speech_bounds(clip: str) -> tuple[float, float]:
    """First and last sample of a clip above 5% of its peak, in seconds."""
    import data_pipelines

    wave = np.abs(np.asarray(data_pipelines.load_audio(clip, sampling_rate=16000)))
    loud = np.nonzero(wave > 0.05 * wave.max())[0]
    return loud[0] / 16000, (loud[-1] + 1) / 16000
