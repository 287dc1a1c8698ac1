"""`python -m xlsr_jax.transcribe` and `python -m xlsr_jax.identify` from the command line on files
in several formats (wav, flac, mp3, another sample rate), against checkpoints of real runs."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import data_pipelines
from tests.finetune_testlib import ctc_run, lid_run, write_formats  # noqa: F401 - pytest fixtures
from tests.trainer_testlib import REPO

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # the CLIs on the fine-tuning runs of finetune_testlib


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )


def _test_clip(lang: str, row: int = 0) -> tuple[str, str]:
    with open(os.path.join(data_pipelines.DEMO_CORPUS_DIR, lang, "test.tsv"), encoding="utf-8") as f:
        fields = [line.rstrip("\n").split("\t") for line in f][1 + row]
    return os.path.join(data_pipelines.DEMO_CORPUS_DIR, lang, "clips", fields[1]), fields[2]


def test_transcribe_cli_on_several_formats(ctc_run, tmp_path):  # noqa: F811
    clip, _ = _test_clip("es")
    files = write_formats(clip, str(tmp_path / "es"))
    other, _ = _test_clip("es", 2)
    bad = tmp_path / "not_audio.wav"
    bad.write_text("this is not audio")
    order = [files["wav"], files["flac"], str(bad), files["mp3"], other, files["wav22k"]]
    proc = _cli("xlsr_jax.transcribe", "--ckpt", ctc_run["checkpoints"], "--batch_size", "2", *order)
    assert proc.returncode == 1, proc.stderr  # one unreadable file
    assert f"error: {bad}: not audio: the file holds text" in proc.stderr  # the cause, not libsndfile's guess
    assert "error: skipped 1 of 6 files" in proc.stderr
    lines = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [p for p, _ in lines] == [p for p in order if p != str(bad)]  # input order, bad file left out
    texts = dict((p, t) for p, t in lines)
    # The same samples in lossless containers decode identically; the mp3 is the source of both.
    assert texts[files["wav"]] == texts[files["flac"]] == texts[files["mp3"]]
    assert texts[files["wav"]].strip(), "a fine-tuned model transcribes something"

    # The CLI agrees with the library class it wraps, run in this process (the clip alone pads to
    # the same whole second as in the CLI's batch, where its partner has the same length).
    from xlsr_jax.transcribe import Transcriber

    in_process, errors = Transcriber(ctc_run["checkpoints"], batch_size=1)([files["wav"]])
    assert errors == [] and in_process == [texts[files["wav"]]]


def test_identify_cli_prints_top_languages(lid_run, tmp_path):  # noqa: F811
    clips = [_test_clip(lang)[0] for lang in lid_run["languages"]]
    files = write_formats(clips[0], str(tmp_path / "first"))
    order = [files["flac"], files["wav22k"], *clips]
    proc = _cli("xlsr_jax.identify", "--ckpt", lid_run["checkpoints"], "--top_k", "3", *order)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [r[0] for r in rows] == order
    for row in rows:
        langs = [cell.split(" ")[0] for cell in row[1:]]
        probs = np.array([float(cell.split(" ")[1]) for cell in row[1:]])
        assert sorted(langs) == sorted(lid_run["languages"])  # top 3 of 3 classes, by name
        assert np.all(np.diff(probs) <= 0) and abs(probs.sum() - 1.0) < 2e-3
    # flac and the mp3 it came from hold the same samples: the same answer.
    assert rows[0][1:] == rows[2][1:]


def test_transcribe_refuses_a_language_id_checkpoint(lid_run):  # noqa: F811
    proc = _cli("xlsr_jax.transcribe", "--ckpt", lid_run["checkpoints"], _test_clip("es")[0])
    assert proc.returncode != 0 and "not a CTC model" in proc.stderr
