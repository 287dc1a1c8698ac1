"""The shipped demo corpus: layout, splits, audio format, and that its generator reproduces it."""

import csv
import os
import shutil

import pytest
import soundfile as sf

import data_pipelines
from data_pipelines import make_demo_corpus
from data_pipelines.demo_sentences import SENTENCES

ROOT = data_pipelines.DEMO_CORPUS_DIR


def _rows(locale, split, root=ROOT):
    with open(os.path.join(root, locale, f"{split}.tsv"), encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_layout_splits_and_audio_format():
    # One folder per locale, and covost/ (the same clips read as CoVoST-2 X -> English).
    assert sorted(os.listdir(ROOT)) == sorted([*data_pipelines.DEMO_LANGUAGES, "covost"])
    assert len(data_pipelines.DEMO_LANGUAGES) >= 6
    total_bytes = 0
    for locale in data_pipelines.DEMO_LANGUAGES:
        splits = {s: _rows(locale, s) for s in ("train", "dev", "test")}
        assert [len(splits[s]) for s in ("train", "dev", "test")] == [60, 10, 10]
        sentences = {s: {r["sentence"] for r in rows} for s, rows in splits.items()}
        # No sentence is shared between splits (Common Voice's rule).
        assert not (sentences["train"] & sentences["dev"] | sentences["train"] & sentences["test"])
        assert set().union(*sentences.values()) == set(SENTENCES[locale])
        with open(os.path.join(ROOT, locale, "clip_durations.tsv")) as f:
            durations = dict(line.rstrip("\n").split("\t") for line in list(f)[1:])
        for rows in splits.values():
            for r in rows:
                assert r["locale"] == locale
                path = os.path.join(ROOT, locale, "clips", r["path"])
                info = sf.info(path)
                assert info.samplerate == 16000 and info.channels == 1
                assert info.format == "MP3"
                assert 0.7 < info.duration < 4.5
                assert abs(info.duration * 1000 - int(durations[r["path"]])) < 80
                total_bytes += os.path.getsize(path)
    assert total_bytes < 5_000_000  # "a few MB at most"


def test_two_voices_per_sentence():
    rows = _rows("es", "train")
    by_sentence = {}
    for r in rows:
        by_sentence.setdefault(r["sentence"], set()).add(r["client_id"])
    assert all(len(v) == 2 for v in by_sentence.values())


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
@pytest.mark.slow
def test_generator_reproduces_a_language(tmp_path):
    make_demo_corpus.make_corpus(str(tmp_path), seed=0, languages=["sw"])
    for split in ("train", "dev", "test"):
        assert _rows("sw", split, str(tmp_path)) == _rows("sw", split)
    new = sf.info(str(tmp_path / "sw" / "clips" / "common_voice_sw_00003.mp3"))
    old = sf.info(os.path.join(ROOT, "sw", "clips", "common_voice_sw_00003.mp3"))
    assert abs(new.duration - old.duration) < 0.05
