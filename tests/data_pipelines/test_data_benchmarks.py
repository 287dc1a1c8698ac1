"""The benchmark corpora's readers (VoxLingua107, VoxPopuli, BABEL) on tiny synthetic copies in
their distributed layouts: utterances, labels, transcripts, lengths and segment boundaries read
end to end; the input pipeline's sampling, bucketing, bad-file counting and exact resume over
them; TFRecord conversion (the way onto gs://); layout mistakes as one line naming the file."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import soundfile as sf
from benchmark_testlib import needs_espeak, write_babel, write_voxlingua107, write_voxpopuli

import data_pipelines
from data_pipelines import sources, tfrecord_writer

pytestmark = needs_espeak


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """The three synthetic corpora (written once per module, ~1 s) and what each must contain."""
    root = tmp_path_factory.mktemp("benchmarks")
    return {
        "voxlingua107": (str(root / "voxlingua107"), write_voxlingua107(str(root / "voxlingua107"))),
        "voxpopuli": (str(root / "voxpopuli"), write_voxpopuli(str(root / "voxpopuli"))),
        "babel": (str(root / "IARPA_BABEL_OP2_202"), write_babel(str(root / "IARPA_BABEL_OP2_202"))),
    }


def test_voxlingua107_language_folders_end_to_end(corpora):
    root, made = corpora["voxlingua107"]
    for split in ("train", "dev"):
        src = sources.make_source({"type": "voxlingua107", "path": root}, split)
        assert len(src) == len(made[split]) and src.transcripts is None
        for k, path in enumerate(src.ids):
            code, samples = made[split][path]
            assert src.languages[k] == code and src.num_samples[k] == samples
            assert src.load(k).shape == (samples,)
    # The dev folder sits in the train root and is not mistaken for a language.
    assert sorted(set(sources.make_source({"type": "voxlingua107", "path": root}, "train").languages)) == [
        "es",
        "sw",
        "tr",
    ]
    only = sources.make_source({"type": "voxlingua107", "path": root, "languages": ["tr"]}, "dev")
    assert only.languages == ["tr", "tr"]


def test_voxlingua107_train_folder_as_speechbrain_unpacks_it(corpora, tmp_path):
    root, made = corpora["voxlingua107"]
    for code in ("es", "sw", "tr"):  # ROOT/train/<code>/ and ROOT/dev/<code>/
        shutil.copytree(os.path.join(root, code), tmp_path / "train" / code)
    shutil.copytree(os.path.join(root, "dev"), tmp_path / "dev")
    for split in ("train", "dev"):
        src = sources.make_source({"type": "voxlingua107", "path": str(tmp_path)}, split)
        assert sorted(src.num_samples.tolist()) == sorted(n for _, n in made[split].values())


def test_voxpopuli_split_tsv_end_to_end(corpora):
    root, made = corpora["voxpopuli"]
    for split in ("train", "dev", "test"):
        for path in (root, os.path.join(root, "transcribed_data")):  # the root or transcribed_data/
            src = sources.make_source({"type": "voxpopuli", "path": path}, split)
            assert sorted(src.ids) == sorted(made[split])
            for k, clip in enumerate(src.ids):
                lang, normalized, _, samples = made[split][clip]
                assert (src.languages[k], src.transcripts[k], src.num_samples[k]) == (lang, normalized, samples)
    raw = sources.make_source(
        {"type": "voxpopuli", "path": os.path.join(root, "transcribed_data", "hr"), "text_column": "raw_text"}, "dev"
    )
    assert raw.languages == ["hr", "hr"] and raw.transcripts == [made["dev"][c][2] for c in raw.ids]
    assert raw.load(0).shape == (made["dev"][raw.ids[0]][3],)
    assert all(f"{os.sep}20" in c for c in raw.ids)  # audio under per-year folders


def test_babel_segments_cut_by_time_marks(corpora):
    root, made = corpora["babel"]
    for split, package_split in (("train", "training"), ("dev", "dev"), ("test", "dev")):
        src = sources.make_source({"type": "babel", "path": root}, split)
        expected = made[package_split]
        assert len(src) == len(expected)
        for k, (sph, t0, t1, text) in enumerate(expected):
            assert src.languages[k] == "sw"  # from the language number 202 in the file names
            assert src.transcripts[k] == text  # <no-speech>, <breath>, (()) removed
            # 8 kHz time marks x 2: the segment's length at 16 kHz, in the metadata and decoded.
            n16 = 2 * (round(t1 * 8000) - round(t0 * 8000))
            assert src.num_samples[k] == n16 == round((t1 - t0) * 16000)
            wav = src.load(k)
            assert wav.shape == (n16,) and wav.dtype == np.float32
            # It is that stretch of the recording: silence segments are silent, speech is not.
            ref, _ = sf.read(sph, start=round(t0 * 8000), stop=round(t1 * 8000), dtype="float32")
            if text:
                assert np.abs(ref).max() > 0.05
            else:
                assert np.abs(wav).max() < 1e-3


def test_pipeline_over_the_new_sources_samples_buckets_counts_and_resumes(corpora, tmp_path):
    # One broken clip among VoxLingua107's, counted at planning, never a failed run.
    vl_root = str(tmp_path / "vl")
    shutil.copytree(corpora["voxlingua107"][0], vl_root)
    with open(os.path.join(vl_root, "es", "broken.wav"), "wb") as f:
        f.write(b"RIFF not really a wav")
    for task, cfg in (
        ("lid", {"type": "voxlingua107", "path": vl_root}),
        ("ctc", {"type": "voxpopuli", "path": corpora["voxpopuli"][0]}),
        ("ctc", {"type": "babel", "path": corpora["babel"][0]}),
    ):
        data = data_pipelines.default_config()
        data.sources = [cfg]
        data.batch_size = 2
        data.min_sample_size = 4000
        data.max_sample_size = 32000
        data.bucket_boundaries = [16000, 32000]
        data.num_parallel_calls = 1
        pipe = data_pipelines.build_input(data, "train", task)
        assert set(pipe.probabilities) == set(pipe.languages) and sum(pipe.probabilities.values()) == pytest.approx(1)
        first = [next(pipe) for _ in range(2)]
        state = pipe.get_state()
        after = [next(pipe) for _ in range(3)]
        for b in first + after:
            assert b["audio"].shape[1] in (16000, 32000)  # bucketed
        fresh = data_pipelines.build_input(data, "train", task)
        fresh.set_state(state)
        for want in after:
            got = next(fresh)
            for key in want:
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"{cfg['type']} {key}")
        if cfg["type"] == "voxlingua107":
            assert pipe.stats["counts"] == {"unreadable": 1} and "broken.wav" in pipe.stats["examples"]["unreadable"][0]
        if cfg["type"] == "babel":  # the two <no-speech> segments of each training recording
            assert pipe.stats["counts"] == {"no_transcript": 4}
        pipe.close()
        fresh.close()


def test_babel_converts_to_tfrecords_for_a_bucket(corpora, tmp_path):
    """Folder corpora reach gs:// as TFRecord shards (`write_tfrecords`' out_dir may be a bucket)."""
    cfg = {"type": "babel", "path": corpora["babel"][0]}
    res = tfrecord_writer.write_tfrecords([cfg], str(tmp_path / "tfr"), "train", num_shards=2)
    orig = sources.make_source(cfg, "train")
    src = sources.make_source({"type": "tfrecord", "path": str(tmp_path / "tfr")}, "train")
    assert res["written"] == len(orig) == len(src)
    for k in range(len(src)):
        j = orig.ids.index(src.ids[k])
        assert (src.languages[k], src.transcripts[k], src.num_samples[k]) == (
            orig.languages[j],
            orig.transcripts[j],
            orig.num_samples[j],
        )


def _one_line_naming(exc_info, name):
    msg = str(exc_info.value)
    assert "\n" not in msg and name in msg, msg


def test_layout_mistakes_name_the_file(corpora, tmp_path):
    # VoxPopuli: a split tsv without the normalised text column.
    vp = tmp_path / "vp"
    shutil.copytree(corpora["voxpopuli"][0], vp)
    tsv = vp / "transcribed_data" / "es" / "asr_train.tsv"
    lines = tsv.read_text(encoding="utf-8").splitlines()
    tsv.write_text("\n".join("\t".join(x.split("\t")[:2]) for x in lines) + "\n", encoding="utf-8")
    with pytest.raises(sources.CorpusLayoutError) as e:
        sources.make_source({"type": "voxpopuli", "path": str(vp)}, "train")
    _one_line_naming(e, str(tsv))
    assert "normalized_text" in str(e.value)
    # VoxLingua107: a language folder without audio files.
    vl = tmp_path / "vl"
    shutil.copytree(corpora["voxlingua107"][0], vl)
    (vl / "sw").mkdir(exist_ok=True)
    for f in (vl / "sw").iterdir():
        f.unlink()
    with pytest.raises(sources.CorpusLayoutError) as e:
        sources.make_source({"type": "voxlingua107", "path": str(vl)}, "train")
    _one_line_naming(e, str(vl / "sw"))
    # BABEL: a transcript whose time marks run past its audio (more than Kaldi's 0.5 s overshoot).
    bb = tmp_path / "bb"
    shutil.copytree(corpora["babel"][0], bb)
    tdir = bb / "conversational" / "training" / "transcription"
    txt = sorted(tdir.iterdir())[0]
    txt.write_text(txt.read_text(encoding="utf-8") + "more words\n[99.000]\n", encoding="utf-8")
    with pytest.raises(sources.CorpusLayoutError) as e:
        sources.make_source({"type": "babel", "path": str(bb)}, "train")
    _one_line_naming(e, str(txt))
    assert "runs past the end" in str(e.value)
    # BABEL: text after the last time mark, and marks going backwards.
    txt.write_text("[0.000]\nwords\n[1.000]\ndangling\n", encoding="utf-8")
    with pytest.raises(sources.CorpusLayoutError) as e:
        sources.make_source({"type": "babel", "path": str(bb)}, "train")
    _one_line_naming(e, f"{txt}:4")
    txt.write_text("[1.000]\nwords\n[0.500]\n", encoding="utf-8")
    with pytest.raises(sources.CorpusLayoutError) as e:
        sources.make_source({"type": "babel", "path": str(bb)}, "train")
    _one_line_naming(e, f"{txt}:3")
    # ... and the pipeline reports the same line when it starts, before any batch.
    data = data_pipelines.default_config()
    data.sources = [{"type": "babel", "path": str(bb)}]
    with pytest.raises(sources.CorpusLayoutError) as e:
        data_pipelines.build_input(data, "train", "ctc")
    _one_line_naming(e, str(txt))
