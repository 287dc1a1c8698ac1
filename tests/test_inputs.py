"""Bad input files: the real cause named, one skip-and-report policy for transcribe, identify and
extract, and the too-short limit from the model's conv receptive field."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import audio as audio_lib
from tests.convert_testlib import TINY_HF, our_param_shapes, random_params
from xlsr_jax import extract, identify, inputs, pretrained, transcribe
from xlsr_jax.models import Wav2Vec2Config

VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "a": 5, "b": 6, "c": 7, "d": 8, "e": 9}


def _bad_files(root) -> dict[str, tuple[str, str]]:
    """{name: (path, expected cause text)} for files users actually feed these commands."""
    rng = np.random.default_rng(0)
    good = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    files = {}

    def add(name, data, cause):
        path = os.path.join(root, name)
        with open(path, "wb") as f:
            f.write(data)
        files[name] = (path, cause)

    add("notes.mp3", b"This is a transcript, not a recording.\n" * 10, "not audio: the file holds text")
    add("zero.wav", b"", "empty file (0 bytes)")
    buf = io.BytesIO()
    sf.write(buf, good, 16000, format="WAV", subtype="PCM_16")
    add("cut.wav", buf.getvalue()[: len(buf.getvalue()) // 2], "truncated WAV: its header announces 32000 bytes")
    buf = io.BytesIO()
    sf.write(buf, good, 16000, format="FLAC")
    add("cut.flac", buf.getvalue()[: len(buf.getvalue()) // 3], "damaged or truncated FLAC data")
    add("song.mid", b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60" + bytes(64), "unsupported format MIDI")
    add("photo.wav", b"\x89PNG\r\n\x1a\n" + bytes(200), "not audio: the file is a PNG image")
    buf = io.BytesIO()
    sf.write(buf, np.zeros(0, np.float32), 16000, format="WAV")
    add("silent_header.wav", buf.getvalue(), "no samples")
    files["missing.wav"] = (os.path.join(root, "missing.wav"), "no such file")
    return files


def test_decode_errors_name_the_real_cause(tmp_path):
    for name, (path, cause) in _bad_files(str(tmp_path)).items():
        with pytest.raises(audio_lib.AudioDecodeError) as e:
            audio_lib.load_audio(path)
        assert str(e.value).startswith(path) and cause in str(e.value), name
        assert e.value.reason in audio_lib.REASONS
        assert "possibly a pipe" not in str(e.value)  # libsndfile's misleading words for a bad .mp3


def test_non_finite_samples_are_named(tmp_path):
    path = tmp_path / "nan.wav"
    sf.write(path, np.array([0.1, np.nan, 0.2] * 100, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(audio_lib.AudioDecodeError, match="non-finite") as e:
        audio_lib.load_audio(str(path))
    assert e.value.reason == "non_finite"


@pytest.mark.parametrize(
    "kernels,strides",
    [((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)), ((10, 3, 3), (5, 2, 2)), ((7,), (3,)), ((4, 5, 2), (1, 3, 4))],
)
def test_receptive_field_is_transformers_shortest_input(kernels, strides):
    torch = pytest.importorskip("torch", reason="compares with transformers' output-length formula")
    transformers = pytest.importorskip("transformers", reason="compares with transformers' output-length formula")
    hf = transformers.Wav2Vec2Model(
        transformers.Wav2Vec2Config(
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=8,
            conv_dim=(4,) * len(kernels),
            conv_kernel=kernels,
            conv_stride=strides,
            num_conv_pos_embeddings=2,
            num_conv_pos_embedding_groups=1,
        )
    )
    lengths = hf._get_feat_extract_output_lengths(torch.arange(1, 2000))
    shortest = int(torch.nonzero(lengths >= 1)[0]) + 1  # transformers: first input with one frame
    cfg = Wav2Vec2Config(
        hidden_size=8,
        num_attention_heads=2,
        conv_dim=(4,) * len(kernels),
        conv_kernel=kernels,
        conv_stride=strides,
        num_conv_pos_embedding_groups=1,
    )
    assert inputs.receptive_field(cfg) == shortest
    assert cfg.feature_lengths(shortest) == 1 and cfg.feature_lengths(shortest - 1) == 0
    if kernels == (10, 3, 3, 3, 3, 2, 2):
        assert shortest == 400  # 25 ms at 16 kHz: the wav2vec 2.0 conv stack


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny exported CTC, classifier and base checkpoints (conv receptive field 40 samples)."""
    root = tmp_path_factory.mktemp("ckpts")
    values = {**TINY_HF, "feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True}
    cfg = Wav2Vec2Config(**values)
    out = {}
    for arch in ("Wav2Vec2ForCTC", "Wav2Vec2ForSequenceClassification", "Wav2Vec2Model"):
        params = random_params(our_param_shapes(cfg, arch), seed=1)
        out[arch] = pretrained.save_pretrained(
            root / arch, params, cfg, arch, vocab=VOCAB if arch == "Wav2Vec2ForCTC" else None
        )
    return cfg, out


def test_transcribe_identify_extract_share_one_bad_file_policy(checkpoints, tmp_path, capsys):
    cfg, ckpts = checkpoints
    assert inputs.receptive_field(cfg) == 40  # kernels (10, 3, 3), strides (5, 2, 2)
    rng = np.random.default_rng(1)
    good = str(tmp_path / "good.wav")
    sf.write(good, (0.2 * rng.standard_normal(3000)).astype(np.float32), 16000, subtype="FLOAT")
    # 300 samples: below the old fixed 400, above this model's 40-sample receptive field.
    short_ok = str(tmp_path / "short_ok.wav")
    sf.write(short_ok, (0.2 * rng.standard_normal(300)).astype(np.float32), 16000, subtype="FLOAT")
    too_short = str(tmp_path / "too_short.wav")
    sf.write(too_short, (0.2 * rng.standard_normal(39)).astype(np.float32), 16000, subtype="FLOAT")
    bad = {k: v for k, v in _bad_files(str(tmp_path)).items() if k in ("notes.mp3", "cut.wav", "zero.wav")}
    order = [good, bad["notes.mp3"][0], short_ok, bad["cut.wav"][0], too_short, bad["zero.wav"][0]]
    expected_bad = {bad[k][0]: bad[k][1] for k in bad}
    expected_bad[too_short] = "too short: 39 samples at 16000 Hz, the model's conv encoder needs at least 40"

    runs = {
        "transcribe": lambda: transcribe.main(["--ckpt", ckpts["Wav2Vec2ForCTC"], *order]),
        "identify": lambda: identify.main(["--ckpt", ckpts["Wav2Vec2ForSequenceClassification"], *order]),
        "extract": lambda: extract.main(
            ["--ckpt", ckpts["Wav2Vec2Model"], "--layer", "final", "--out", str(tmp_path / "f.npz"), *order]
        ),
    }
    stderr_lines = {}
    for name, run in runs.items():
        capsys.readouterr()
        assert run() == 1, name  # exit 1 at the end: some files were skipped
        out, err = capsys.readouterr()
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        stderr_lines[name] = lines
        assert lines[-1] == f"error: skipped {len(expected_bad)} of {len(order)} files", name
        for path, cause in expected_bad.items():
            assert any(line.startswith(f"error: {path}: ") and cause in line for line in lines), (name, path, lines)
        if name != "extract":  # one output line per usable file, in input order
            assert [line.split("\t")[0] for line in out.splitlines()] == [good, short_ok], name
    # The very same lines from all three commands.
    assert stderr_lines["transcribe"] == stderr_lines["identify"] == stderr_lines["extract"]
    feats = np.load(tmp_path / "f.npz")
    assert list(feats["paths"]) == [good, short_ok]
    assert feats["features_1"].shape == (cfg.feature_lengths(300), cfg.hidden_size)


def test_all_files_good_exits_zero_and_all_bad_writes_nothing(checkpoints, tmp_path, capsys):
    _, ckpts = checkpoints
    good = str(tmp_path / "good.wav")
    sf.write(good, np.full(800, 0.1, np.float32), 16000)
    assert extract.main(["--ckpt", ckpts["Wav2Vec2Model"], "--out", str(tmp_path / "a.npz"), good]) == 0
    (tmp_path / "bad.wav").write_text("text")
    argv = ["--ckpt", ckpts["Wav2Vec2Model"], "--out", str(tmp_path / "b.npz"), str(tmp_path / "bad.wav")]
    assert extract.main(argv) == 1
    assert not (tmp_path / "b.npz").exists()
    assert "error: skipped 1 of 1 files" in capsys.readouterr().err
