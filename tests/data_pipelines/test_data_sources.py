"""Corpus readers: fairseq manifest, Common Voice, MLS, TFRecord shards, TFDS; mixing them."""

import os

import numpy as np
import pytest
import soundfile as sf
from corpus_testlib import tone, write_common_voice

import data_pipelines
from data_pipelines import sources, tfrecord_writer


def _manifest(tmp_path, n=4, missing=(), extra_cols=True):
    audio = tmp_path / "audio"
    audio.mkdir(exist_ok=True)
    lines = [str(audio)]
    for i in range(n):
        secs = 0.5 + 0.25 * i
        name = f"sub/u{i}.flac"
        if i not in missing:
            os.makedirs(audio / "sub", exist_ok=True)
            sf.write(audio / name, tone(secs, 16000, 300 + 50 * i), 16000)
        cols = [name, str(int(secs * 16000))]
        if extra_cols:
            cols += ["xx" if i % 2 else "yy", f"word {i}"]
        lines.append("\t".join(cols))
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_manifest_reads_lengths_languages_transcripts(tmp_path):
    _manifest(tmp_path)
    src = sources.make_source({"type": "manifest", "path": str(tmp_path)}, "train")
    assert len(src) == 4
    assert src.num_samples.tolist() == [8000, 12000, 16000, 20000]
    assert src.languages == ["yy", "xx", "yy", "xx"]
    assert src.transcripts[2] == "word 2"
    assert src.load(1).shape == (12000,)


def test_manifest_fairseq_plain_with_wrd_and_language(tmp_path):
    _manifest(tmp_path, extra_cols=False)
    (tmp_path / "train.wrd").write_text("a\nb\nc\nd\n")
    cfg = {"type": "manifest", "path": str(tmp_path / "train.tsv"), "language": "sw"}
    src = sources.make_source(cfg, "train")
    assert src.languages == ["sw"] * 4 and src.transcripts == ["a", "b", "c", "d"]


def test_manifest_with_missing_files_fails_at_start_listing_them(tmp_path):
    _manifest(tmp_path, n=5, missing=(1, 3))
    with pytest.raises(FileNotFoundError) as e:
        sources.make_source({"type": "manifest", "path": str(tmp_path)}, "train")
    msg = str(e.value)
    assert "2 of 5" in msg and "u1.flac" in msg and "u3.flac" in msg and "u0.flac" not in msg


def test_common_voice_probes_lengths_without_clip_durations(tmp_path):
    made = write_common_voice(str(tmp_path), {"ky": 3}, "train", durations=False)
    src = sources.make_source({"type": "common_voice", "path": str(tmp_path / "ky")}, "train")
    assert src.languages == ["ky"] * 3
    for path, secs in made.items():
        assert abs(src.num_samples[src.ids.index(path)] - secs * 16000) <= 1


def _mls(root, ext, lang_dir="mls_swahili"):
    base = root / lang_dir / "dev"
    rows, segs = [], []
    for i, (spk, book) in enumerate([("10", "20"), ("10", "21"), ("11", "20")]):
        utt = f"{spk}_{book}_{i:06d}"
        d = base / "audio" / spk / book
        d.mkdir(parents=True, exist_ok=True)
        secs = 0.6 + 0.2 * i
        fmt = {"flac": ("FLAC", "PCM_16", 16000), "opus": ("OGG", "OPUS", 48000)}[ext]
        sf.write(
            d / f"{utt}.{ext}",
            tone(secs, fmt[2]),
            fmt[2],
            format=fmt[0],
            subtype=fmt[1],
        )
        rows.append(f"{utt}\tmaneno {i}")
        segs.append(f"{utt}\thttp://x\t{10.0:.2f}\t{10.0 + secs:.2f}")
    (base / "transcripts.txt").write_text("\n".join(rows) + "\n")
    (base / "segments.txt").write_text("\n".join(segs) + "\n")
    return root / lang_dir


@pytest.mark.parametrize("ext", ["flac", "opus"])
def test_mls_folder(tmp_path, ext):
    path = _mls(tmp_path, ext)
    src = sources.make_source({"type": "mls", "path": str(path)}, "dev")
    assert src.languages == ["swahili"] * 3
    assert src.transcripts == ["maneno 0", "maneno 1", "maneno 2"]
    assert src.num_samples.tolist() == [9600, 12800, 16000]
    wav = src.load(2)  # opus decodes at 48 kHz: resampled to 16 kHz
    assert abs(wav.size - 16000) < 0.06 * 16000


@pytest.mark.parametrize("encoding", ["pcm16", "flac"])
def test_tfrecord_writer_round_trip(tmp_path, encoding):
    cv = tmp_path / "cv"
    write_common_voice(str(cv), {"aa": 3, "bb": 4}, "train")
    cv_cfg = {"type": "common_voice", "path": str(cv)}
    out = tmp_path / "tfr"
    res = tfrecord_writer.write_tfrecords([cv_cfg], str(out), "train", num_shards=3, encoding=encoding)
    assert res["written"] == 7 and len(res["files"]) == 3
    orig = sources.make_source(cv_cfg, "train")
    for drop_index in (
        False,
        True,
    ):  # with the writer's index, and by scanning the shards
        if drop_index:
            for f in res["files"]:
                os.remove(f + ".index.json")
        src = sources.make_source({"type": "tfrecord", "path": str(out)}, "train")
        assert len(src) == 7 and sorted(src.ids) == sorted(orig.ids)
        for k in range(len(src)):
            j = orig.ids.index(src.ids[k])
            assert src.languages[k] == orig.languages[j]
            assert src.transcripts[k] == orig.transcripts[j]
            ref = orig.load(j)
            got = src.load(k)
            assert src.num_samples[k] == ref.size == got.size
            assert np.abs(got - ref).max() < 1e-4  # 16-bit quantisation only


@pytest.mark.parametrize("file_format", ["array_record", "tfrecord"])
def test_tfds_builder_and_source_round_trip(tmp_path, file_format):
    # array_record: random access through tfds.data_source; tfrecord (most of the TFDS catalog):
    # random access through byte offsets found by one header scan.
    if file_format == "array_record":
        pytest.importorskip(
            "array_record",
            reason="the array_record package (installed with tensorflow-datasets, pinned in constraints.txt) "
            "is missing: pip install -c constraints.txt -e .",
        )
    from data_pipelines import tfds_builder

    cv = tmp_path / "cv"
    write_common_voice(str(cv), {"aa": 3, "cc": 2}, "dev")
    cv_cfg = {"type": "common_voice", "path": str(cv)}
    path = tfds_builder.prepare([cv_cfg], "t", str(tmp_path / "tfds"), splits=("dev",), file_format=file_format)
    src = sources.make_source({"type": "tfds", "path": path}, "dev")
    orig = sources.make_source(cv_cfg, "dev")
    assert len(src) == 5
    assert sorted(src.languages) == sorted(orig.languages)
    assert sorted(src.transcripts) == sorted(orig.transcripts)
    for k in range(len(src)):
        j = orig.transcripts.index(src.transcripts[k])
        ref = orig.load(j)
        np.testing.assert_allclose(src.load(k), ref, atol=1e-4)


def test_mixed_sources_in_one_pipeline(tmp_path):
    cv = tmp_path / "cv"
    write_common_voice(str(cv), {"aa": 6, "bb": 6}, "train", seconds=(0.6, 1.8))
    man = tmp_path / "man"
    man.mkdir()
    _manifest(man, n=6, extra_cols=False)
    cfg = data_pipelines.default_config()
    cfg.sources = [
        {"type": "common_voice", "path": str(cv)},
        {"type": "manifest", "path": str(man), "language": "zz"},
    ]
    cfg.min_sample_size = 4000
    cfg.max_sample_size = 32000
    cfg.bucket_boundaries = [16000, 32000]
    cfg.batch_size = 4
    pipe = data_pipelines.build_input(cfg, "train", "lid")
    assert pipe.languages == ["aa", "bb", "zz"]
    langs = np.concatenate([next(pipe)["language"] for _ in range(30)])
    assert set(langs.tolist()) == {0, 1, 2}


def test_unknown_source_type():
    with pytest.raises(ValueError, match="unknown source type"):
        sources.make_source({"type": "nope", "path": "/"}, "train")
