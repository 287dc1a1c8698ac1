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
    """Raised when a file cannot be decoded or holds no samples.

    `reason` is one of REASONS, so callers can count failures by cause; the message says the
    same in words, naming the file.
    """

    def __init__(self, message: str, reason: str = "unreadable"):
        super().__init__(message)
        self.reason = reason


# Why a file could not be used: no such file, no permission to read it, 0 bytes, no audio
# samples, bytes that are not audio (text, an image, ...), an audio container cut short, a format
# or codec libsndfile does not decode, a decoder failure on data that looked like audio, NaN/inf.
REASONS = (
    "missing",
    "unreadable",
    "empty",
    "no_samples",
    "not_audio",
    "truncated",
    "unsupported",
    "damaged",
    "non_finite",
)

# Leading bytes of the formats libsndfile decodes (WAV/RF64/W64, AIFF, FLAC, OGG, CAF, AU, MP3 with
# an ID3 tag or a bare MPEG frame sync).
_AUDIO_MAGIC = (
    (b"RIFF", "WAV"),
    (b"RF64", "WAV"),
    (b"riff", "W64"),
    (b"FORM", "AIFF"),
    (b"fLaC", "FLAC"),
    (b"OggS", "OGG"),
    (b"caff", "CAF"),
    (b".snd", "AU"),
    (b"ID3", "MP3"),
)
# Formats users try that libsndfile does not read (name, what to do).
_UNSUPPORTED_MAGIC = (
    (b"ftyp", 4, "MP4/M4A (AAC)"),
    (b"MThd", 0, "MIDI (notes, not recorded sound)"),
    (b"\x1aE\xdf\xa3", 0, "WebM/Matroska"),
    (b"#!AMR", 0, "AMR"),
    (b"0&\xb2u", 0, "WMA/ASF"),
)
_OTHER_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"<!DOCTYPE", "an HTML page"),
    (b"<html", "an HTML page"),
)


def _head(path, n: int = 4096) -> bytes:
    if isinstance(path, (bytes, bytearray)):
        return bytes(path[:n])
    with open(path, "rb") as f:
        return f.read(n)


def _size(path) -> int:
    return len(path) if isinstance(path, (bytes, bytearray)) else os.path.getsize(path)


def _wav_data_shortfall(head: bytes, size: int) -> tuple[int, int] | None:
    """(declared, present) bytes of a RIFF/WAVE file's `data` chunk when the file is shorter
    than its header says; None when it is not a WAV file, is complete, or `data` is not found."""
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        chunk, length = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if chunk == b"data":
            present = size - (pos + 8)
            return (length, present) if length != 0xFFFFFFFF and present < length else None
        pos += 8 + length + (length & 1)
    return None


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a character cut at the end of the sample
            return False
        text = head[: e.start].decode("utf-8")
    return sum(c.isprintable() or c in "\r\n\t" for c in text) >= 0.95 * len(text)


def diagnose(path, error: Exception | None = None) -> AudioDecodeError:
    """The real cause of a failed decode, as an AudioDecodeError naming the file and the cause.

    libsndfile reports most failures as "Format not recognised" or, for a `.mp3` name, "File does
    not exist or is not a regular file (possibly a pipe?)"; the file's size and leading bytes
    tell empty, text or other non-audio data, formats it does not read, and truncated WAVs apart.
    """
    name = _name(path)
    detail = f" ({' '.join(str(error).split())})" if error is not None else ""
    if not isinstance(path, (bytes, bytearray)):
        if not os.path.exists(path):
            return AudioDecodeError(f"{name}: no such file", "missing")
        if os.path.isdir(path):
            return AudioDecodeError(f"{name}: is a directory, not an audio file", "not_audio")
    try:
        size, head = _size(path), _head(path)
    except OSError as e:
        return AudioDecodeError(f"{name}: cannot read the file ({e.strerror or e})", "unreadable")
    if size == 0:
        return AudioDecodeError(f"{name}: empty file (0 bytes)", "empty")
    short = _wav_data_shortfall(head, size)
    if short is not None:
        return AudioDecodeError(
            f"{name}: truncated WAV: its header announces {short[0]} bytes of audio, the file holds {short[1]}",
            "truncated",
        )
    for magic, offset, kind in _UNSUPPORTED_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return AudioDecodeError(
                f"{name}: unsupported format {kind}; convert it to WAV/FLAC/MP3/OGG (e.g. ffmpeg -i IN OUT.wav)",
                "unsupported",
            )
    for magic, kind in _AUDIO_MAGIC:
        if head.startswith(magic):
            return AudioDecodeError(f"{name}: damaged or truncated {kind} data{detail}", "damaged")
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # MPEG audio frame sync
        return AudioDecodeError(f"{name}: damaged or truncated MP3 data{detail}", "damaged")
    for magic, kind in _OTHER_MAGIC:
        if head.lstrip()[: len(magic)].lower() == magic.lower():
            return AudioDecodeError(f"{name}: not audio: the file is {kind}", "not_audio")
    if _looks_like_text(head):
        return AudioDecodeError(f"{name}: not audio: the file holds text ({size} bytes)", "not_audio")
    return AudioDecodeError(f"{name}: not a recognised audio format{detail}", "not_audio")


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
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as e:
        raise diagnose(path, e) from e
    if audio.size == 0:
        raise AudioDecodeError(f"{_name(path)}: no samples (an empty audio stream)", "no_samples")
    if not isinstance(path, (bytes, bytearray)):
        # libsndfile reads what is there of a cut-off WAV without complaint.
        short = _wav_data_shortfall(_head(path), _size(path))
        if short is not None:
            raise diagnose(path)
    audio = downmix(audio)  # [samples]
    # One reduction instead of an isfinite mask: NaN/inf in a corrupt float file propagate
    # into the sum (finite audio cannot overflow float32 here).
    if not np.isfinite(audio.sum()):
        raise AudioDecodeError(f"{_name(path)}: non-finite samples (NaN or infinity)", "non_finite")
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
