"""Audio files given on the command line: decoding as the model expects, and one bad-file policy.

`transcribe`, `identify` and `extract` all read their inputs through `decode_inputs` and end
with `report_skipped`: a file that cannot be used is skipped with one line on stderr naming it
and the cause (empty, not audio, truncated, unsupported, shorter than the model's receptive
field), the other files are processed, and the command exits 1 at the end when any was skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import numpy as np

from xlsr_jax.constants import SAMPLE_RATE


def receptive_field(config: Any) -> int:
    """Samples the conv feature encoder needs for one output frame: the smallest input length
    with `config.feature_lengths(n) >= 1`.

    From the conv stack (`conv_kernel` k_i, `conv_stride` s_i):
    k_0 + sum_{i>0} (k_i - 1) * s_0 * ... * s_{i-1}. 400 samples (25 ms at 16 kHz) for
    wav2vec 2.0 / XLSR's kernels (10, 3, 3, 3, 3, 2, 2) and strides (5, 2, 2, 2, 2, 2, 2).
    """
    field, jump = int(config.conv_kernel[0]), int(config.conv_stride[0])
    for kernel, stride in zip(config.conv_kernel[1:], config.conv_stride[1:]):
        field += (int(kernel) - 1) * jump
        jump *= int(stride)
    return field


def decode_input(path: str, audio_settings: Mapping[str, Any], config: Any | None = None) -> np.ndarray:
    """One file as the model expects it: mono float32 [samples] at `audio_settings["sampling_rate"]`,
    normalised per utterance when `audio_settings["do_normalize"]`.

    Raises:
      ValueError with a message "<path>: <cause>" (data_pipelines.AudioDecodeError for decode
      failures, which also carries `.reason`); "too short" when `config` is given and the audio
      is shorter than its receptive field.
    """
    import data_pipelines

    rate = int(audio_settings.get("sampling_rate", SAMPLE_RATE))
    wave = data_pipelines.load_audio(path, sampling_rate=rate)
    if config is not None and wave.size < receptive_field(config):
        limit = receptive_field(config)
        raise ValueError(
            f"{path}: too short: {wave.size} samples at {rate} Hz, the model's conv encoder needs at least "
            f"{limit} ({1000 * limit / rate:.1f} ms) for one frame"
        )
    if audio_settings.get("do_normalize", True):
        wave = data_pipelines.normalize(wave)
    return np.asarray(wave, np.float32)


def decode_inputs(
    paths: Sequence[str], audio_settings: Mapping[str, Any], config: Any | None = None
) -> tuple[list[np.ndarray | None], list[str]]:
    """`decode_input` for every path, skipping the files that fail.

    Returns:
      (waveforms float32 [samples], None for a skipped file; one message per skipped file).
    """
    waves: list[np.ndarray | None] = []
    errors: list[str] = []
    for path in paths:
        try:
            waves.append(decode_input(path, audio_settings, config))
        except (ValueError, OSError) as e:
            message = str(e)
            errors.append(message if message.startswith(str(path)) else f"{path}: {message}")
            waves.append(None)
    return waves, errors


def report_skipped(errors: Sequence[str], total: int, stream: TextIO | None = None) -> int:
    """Prints one `error: ...` line per skipped file and a count; returns the exit status
    (1 when any file was skipped, else 0)."""
    stream = stream or sys.stderr
    for message in errors:
        print(f"error: {message}", file=stream)
    if errors:
        print(f"error: skipped {len(errors)} of {total} files", file=stream)
    return 1 if errors else 0
