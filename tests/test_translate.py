"""`python -m xlsr_jax.translate` from the command line: one translation a line, bad files named."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import data_pipelines
from tests.st_testlib import tiny_translation_export
from tests.trainer_testlib import REPO

pytest.importorskip("sentencepiece", reason="needs the translation extra: pip install -e '.[translation]'")
pytestmark = pytest.mark.integration  # the CLI in a subprocess


def _clip(lang: str, row: int) -> str:
    with open(os.path.join(data_pipelines.DEMO_CORPUS_DIR, lang, "test.tsv"), encoding="utf-8") as f:
        fields = [line.rstrip("\n").split("\t") for line in f][1 + row]
    return os.path.join(data_pipelines.DEMO_CORPUS_DIR, lang, "clips", fields[1])


def test_translate_cli(tmp_path):
    ckpt = tiny_translation_export(str(tmp_path / "st"), generation={"max_length": 12, "forced_bos_token_id": None})
    bad = tmp_path / "not_audio.wav"
    bad.write_text("this is not audio")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    order = [_clip("es", 0), str(bad), _clip("ru", 1), str(empty), _clip("tr", 2)]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "xlsr_jax.translate", "--ckpt", ckpt, "--tgt_lang", "en", "--beam", "2", *order]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr  # two bad files
    assert "not_audio.wav" in proc.stderr and "empty.wav" in proc.stderr
    assert proc.stderr.count("error: ") == 2
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [r[0] for r in rows] == [p for p in order if p not in (str(bad), str(empty))]

    # The CLI agrees with the class it wraps (same padded batch shapes: one file per batch here).
    from xlsr_jax.translate import Translator

    translator = Translator(ckpt, tgt_lang="en", beam=2, batch_size=1)
    assert translator.gen.forced_bos_token_id == translator.tokenizer.language_id("en_XX")
    texts, errors = translator([_clip("ru", 1)])
    assert errors == [] and texts == [dict(rows)[_clip("ru", 1)]]


def test_translate_refuses_a_checkpoint_without_tokenizer(tmp_path):
    from xlsr_jax.translate import main

    ckpt = tiny_translation_export(str(tmp_path / "st"))
    os.remove(os.path.join(ckpt, "tokenizer", "sentencepiece.bpe.model"))
    assert main(["--ckpt", ckpt, _clip("es", 0)]) == 2
