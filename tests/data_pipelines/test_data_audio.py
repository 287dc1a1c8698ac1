"""Decoding every supported format and rate, downmixing, resampling, bad files."""

import io

import numpy as np
import pytest
import soundfile as sf
from corpus_testlib import tone

import data_pipelines
from data_pipelines import audio as audio_lib

# (container, subtype, rates): the formats Common Voice, MLS, VoxPopuli and friends ship.
FORMATS = [
    ("WAV", "PCM_16", [8000, 16000, 22050, 44100, 48000]),
    ("WAV", "FLOAT", [16000, 24000]),
    ("FLAC", "PCM_16", [8000, 16000, 44100]),
    ("FLAC", "PCM_24", [48000]),
    ("OGG", "VORBIS", [16000, 22050, 44100]),
    ("OGG", "OPUS", [16000, 48000]),
    ("MP3", "MPEG_LAYER_III", [16000, 22050, 32000, 44100, 48000]),
]
CASES = [(c, s, r) for c, s, rates in FORMATS for r in rates]
LOSSY = {"VORBIS", "OPUS", "MPEG_LAYER_III"}


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spec) * sr / x.size)


@pytest.mark.parametrize("container,subtype,sr", CASES, ids=[f"{c}-{s}-{r}" for c, s, r in CASES])
def test_every_format_and_rate_decodes_to_16k(tmp_path, container, subtype, sr):
    secs, freq = 1.0, 440.0
    path = tmp_path / f"x.{container.lower()}"
    sf.write(
        path,
        tone(secs, sr, freq, channels=2, noise=0.0),
        sr,
        format=container,
        subtype=subtype,
    )
    out = data_pipelines.load_audio(str(path))
    assert out.dtype == np.float32 and out.ndim == 1
    # Lossy codecs add encoder delay/padding of a few ms; lossless must be exact to a sample.
    tol = 0.06 * 16000 if subtype in LOSSY else 1
    assert abs(out.size - secs * 16000) <= tol, out.size
    assert abs(_peak_hz(out, 16000) - freq) < 5  # the tone survived decode + resample + downmix
    if subtype not in LOSSY:
        # Downmix = channel mean (0.95 x tone): compare with the analytic 16 kHz signal.
        ref = 0.95 * tone(secs, 16000, freq, noise=0.0)
        mid = slice(800, 15200)  # away from resampler edge effects
        assert np.abs(out[mid] - ref[mid]).max() < 2e-3


def test_bytes_input_matches_path(tmp_path):
    path = tmp_path / "x.flac"
    sf.write(path, tone(0.5, 22050), 22050)
    np.testing.assert_array_equal(
        data_pipelines.load_audio(path.read_bytes()),
        data_pipelines.load_audio(str(path)),
    )


def test_corrupt_and_empty_files_raise_decode_error(tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\x00garbage" * 100)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    zero_bytes = tmp_path / "zero.flac"
    zero_bytes.write_bytes(b"")
    for p in (bad, empty, zero_bytes):
        with pytest.raises(audio_lib.AudioDecodeError):
            data_pipelines.load_audio(str(p))


def test_normalize_zero_mean_unit_variance():
    x = 3.0 + 0.2 * np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    y = data_pipelines.normalize(x)
    assert abs(float(y.mean())) < 1e-5 and abs(float(y.std()) - 1) < 1e-3
    assert np.all(data_pipelines.normalize(np.zeros(100, np.float32)) == 0)


def test_resample_identity_and_length():
    x = tone(1.0, 16000)
    assert data_pipelines.resample(x, 16000, 16000) is x
    assert abs(data_pipelines.resample(x, 16000, 8000).size - 8000) <= 1


def test_in_memory_roundtrip_of_every_writer_format():
    # soundfile can write every format we claim to read: guards against a libsndfile without mp3.
    for container, subtype, _ in FORMATS:
        buf = io.BytesIO()
        sf.write(buf, tone(0.2, 16000), 16000, format=container, subtype=subtype)
        assert data_pipelines.load_audio(buf.getvalue()).size > 0


def test_non_finite_float_wav_is_rejected(tmp_path):
    x = tone(0.2, 16000)
    x[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(audio_lib.AudioDecodeError, match="non-finite"):
        data_pipelines.load_audio(str(path))
