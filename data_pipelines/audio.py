"""Decoding, resampling, downmixing and normalisation of speech audio.

Decoding goes through libsndfile (`soundfile`): WAV, FLAC, OGG/Vorbis, OGG/Opus and MP3 (libsndfile
>= 1.1) in one C library with no subprocess. Resampling uses `soxr` (the same library behind
librosa's default `soxr_hq`, without librosa's overhead); `experiments/benchmark_input.py` measures
both. Everything returns float32 in [-1, 1].
"""

from __future__ import annotations

import io
import os

import numpy as np
import soundfile as sf
import soxr

from xlsr_jax.constants import SAMPLE_RATE


class AudioDecodeError(ValueError):
    """Raised when a file cannot be decoded or holds no samples."""


def resample(audio: np.ndarray, orig_sampling_rate: int, sampling_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resamples mono float audio [samples] from `orig_sampling_rate` to `sampling_rate` Hz (soxr, high quality)."""
    if orig_sampling_rate == sampling_rate:
        return audio
    return soxr.resample(audio, orig_sampling_rate, sampling_rate, quality="HQ").astype(np.float32, copy=False)


def downmix(audio: np.ndarray) -> np.ndarray:
    """[samples] or [samples, channels] -> mono [samples] (channel mean)."""
    if audio.ndim == 2:
        return audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0]
    return audio


def load_audio(path: str | os.PathLike | bytes, sampling_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decodes an audio file (wav/flac/ogg/opus/mp3) into mono float32 at `sampling_rate` Hz.

    Args:
      path: file path, or the encoded file's bytes (as stored in TFRecords/TFDS).
      sampling_rate: output rate in Hz (default: the models' `SAMPLE_RATE`).
    Returns:
      float32 [samples], mono.
    Raises:
      AudioDecodeError: unreadable, corrupt or empty input (the pipeline counts and skips these).
    """
    src = io.BytesIO(path) if isinstance(path, (bytes, bytearray)) else path
    try:
        audio, sr = sf.read(src, dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioDecodeError(f"cannot decode {_name(path)}: {e}") from e
    if audio.size == 0:
        raise AudioDecodeError(f"no samples in {_name(path)}")
    audio = downmix(audio)  # [samples]
    # One reduction instead of an isfinite mask: NaN/inf in a corrupt float file propagate
    # into the sum (finite audio cannot overflow float32 here).
    if not np.isfinite(audio.sum()):
        raise AudioDecodeError(f"non-finite samples in {_name(path)}")
    return resample(audio, sr, sampling_rate)


def audio_info(path: str | os.PathLike) -> tuple[int, int]:
    """Reads only the header: returns (frames, sampling rate in Hz); raises AudioDecodeError."""
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioDecodeError(f"cannot read header of {_name(path)}: {e}") from e
    return int(info.frames), int(info.samplerate)


def normalize(audio: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the utterance (what the layer-norm feature extractor expects;
    fairseq's `normalize=True` and HF's `do_normalize`). Silence stays zero.

    float32 throughout (numpy's pairwise sum and a BLAS dot are accurate to ~1e-6 here); this runs
    once per utterance in the hot path, where float64 copies cost a fifth of decode time.
    """
    audio = audio - audio.mean()  # [samples] float32, a new array
    var = float(np.dot(audio, audio)) / max(audio.size, 1)
    audio *= np.float32(1.0 / np.sqrt(var + 1e-7))
    return audio


def _name(path) -> str:
    return f"<{len(path)} bytes>" if isinstance(path, (bytes, bytearray)) else str(path)
