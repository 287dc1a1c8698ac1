"""Representation extraction: hidden states of a converted or trained model for audio files.

  python -m xlsr_jax.extract --ckpt DIR [--layer N | --layer final] --out FEATS.npz AUDIO...

DIR is an exported checkpoint (`xlsr_jax.pretrained`: from `python -m xlsr_jax.convert`) or a
training run (its --workdir, checkpoints/ folder, a step or params folder; a run gives its newest
step, named on stderr). Each file is decoded to 16 kHz mono, normalised per
utterance if the model expects it (model.json "audio.do_normalize"), and encoded on its own.

Layers follow transformers 5: index 0 is the Transformer's input (features + positional
embedding), index i the output of block i (for pre-LN models the last one is *before* the
final LayerNorm); `--layer final` is `last_hidden_state` (after it). Without --layer all
num_hidden_layers + 1 are stored.

Files that cannot be used are skipped, as by `transcribe` and `identify`: one line on stderr
names each with the cause, the others are extracted, and the exit status is 1 at the end.

Output (.npz, written atomically):
  paths            str [N]                      the input files extracted, in order
  layer            the --layer argument ("all", "final" or the index)
  num_frames       int32 [N]                    frames per file (20 ms each at 16 kHz)
  features_{i}     float32 [frames, hidden]     for --layer N / final
                   float32 [layers+1, frames, hidden] without --layer

Batching: layer-norm-extractor models (XLSR-53, XLS-R) give the same valid frames with padding,
so inputs are padded up to a multiple of --bucket_seconds and padding-masked, which bounds
the number of compilations; group-norm models (BASE) normalise over the padding, so they run
each file at its exact length, as HF recommends.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from xlsr_jax import fileio, pretrained
from xlsr_jax.constants import SAMPLE_RATE
from xlsr_jax.models import Wav2Vec2Model

CKPT_HELP = "exported checkpoint or training run (--workdir, checkpoints/, a step or params folder)"


def _parse_layer(value: str | None, num_layers: int) -> int | str:
    if value is None or value == "all":
        return "all"
    if value == "final":
        return "final"
    try:
        index = int(value)
    except ValueError:
        raise SystemExit(f"--layer must be an index 0..{num_layers}, 'final' or 'all', got {value!r}") from None
    if not 0 <= index <= num_layers:
        raise SystemExit(f"--layer {index} out of range: this model has layers 0..{num_layers}")
    return index


@functools.lru_cache(maxsize=8)
def _encoder_fn(config):
    """One jitted encoder per config (configs are frozen, hashable), shared by all Extractors."""
    model = Wav2Vec2Model(config)

    def encode(params, audio, padding):  # audio, padding: [1, samples]
        out = model.apply({"params": params}, audio, padding, deterministic=True, output_hidden_states=True)
        return jnp.stack(out.hidden_states, axis=0), out.last_hidden_state  # [L+1, 1, T, H], [1, T, H]

    return jax.jit(encode)


class Extractor:
    """Runs the encoder of a loaded checkpoint on one utterance at a time (jitted per shape)."""

    def __init__(self, loaded: pretrained.Pretrained, bucket_samples: int = SAMPLE_RATE):
        self.config = loaded.config
        self.params = loaded.params.get("wav2vec2", loaded.params)
        self.normalize = bool(loaded.audio.get("do_normalize", False))
        self.sampling_rate = int(loaded.audio.get("sampling_rate", SAMPLE_RATE))
        self.bucket = bucket_samples if self.config.feat_extract_norm == "layer" else 0
        self._encode = _encoder_fn(self.config)

    def __call__(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """audio: float32 [samples] at the model's rate -> (hidden [L+1, frames, H], last [frames, H])."""
        from data_pipelines.audio import normalize

        if self.normalize:
            audio = normalize(audio.astype(np.float32))
        n = audio.shape[0]
        frames = self.config.feature_lengths(n)
        if frames < 1:
            raise ValueError(f"audio of {n} samples is shorter than the encoder's receptive field")
        size = n if not self.bucket else -(-n // self.bucket) * self.bucket
        batch = np.zeros((1, size), np.float32)  # [1, samples]
        batch[0, :n] = audio
        padding = np.arange(size)[None, :] >= n  # [1, samples], True = padding
        hidden, last = self._encode(self.params, jnp.asarray(batch), jnp.asarray(padding))
        return np.asarray(hidden[:, 0, :frames]), np.asarray(last[0, :frames])


def extract(
    ckpt: str, audio_paths: Sequence[str], out: str, layer: str | None = None, bucket_seconds: float = 1.0
) -> tuple[str | None, list[str]]:
    """Extracts features for `audio_paths` into the .npz `out` (see module docstring).

    Files that cannot be used (`xlsr_jax.inputs.decode_input`: unreadable, not audio, shorter
    than the receptive field) are skipped; the .npz holds the others, in order.

    Returns:
      (the .npz path, or None when no file could be used; one message per skipped file).
    """
    from xlsr_jax import inputs

    loaded = pretrained.load_pretrained(ckpt)
    which = _parse_layer(layer, loaded.config.num_hidden_layers)
    extractor = Extractor(loaded, int(bucket_seconds * loaded.audio.get("sampling_rate", SAMPLE_RATE)))
    # Normalisation is the Extractor's (it also serves callers with raw arrays).
    settings = {**loaded.audio, "do_normalize": False}
    arrays: dict[str, np.ndarray] = {}
    frames, kept, errors = [], [], []
    for path in audio_paths:
        # One file at a time: a long list never holds more than one waveform.
        waves, failed = inputs.decode_inputs([path], settings, loaded.config)
        if failed:
            errors += failed
            continue
        hidden, last = extractor(waves[0])
        feats = hidden if which == "all" else (last if which == "final" else hidden[which])
        arrays[f"features_{len(kept)}"] = feats.astype(np.float32)
        frames.append(last.shape[0])
        kept.append(str(path))
    if not kept:
        return None, errors
    arrays["paths"] = np.asarray(kept)
    arrays["layer"] = np.asarray(str(which))
    arrays["num_frames"] = np.asarray(frames, np.int32)
    out = os.path.abspath(out)
    with fileio.atomic_file(out, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return out, errors


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(
        prog="python -m xlsr_jax.extract", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--ckpt",
        required=True,
        help=CKPT_HELP,
    )
    p.add_argument("--layer", default=None, help="hidden-state index 0..num_layers, 'final', or 'all' (default)")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument(
        "--bucket_seconds",
        type=float,
        default=1.0,
        help="layer-norm models: pad inputs to a multiple of this (fewer compilations)",
    )
    p.add_argument("audio", nargs="+", help="audio files (wav/flac/ogg/mp3; any rate, mono or stereo)")
    args = p.parse_args(argv)
    from xlsr_jax import inputs

    pretrained.setup_cli_logging()

    try:
        out, errors = extract(args.ckpt, args.audio, args.out, args.layer, args.bucket_seconds)
    except (FileNotFoundError, ValueError) as e:  # the checkpoint, not an audio file
        print(f"error: {e}", file=sys.stderr)
        return 1
    if out is not None:
        print(out)
    return inputs.report_skipped(errors, len(args.audio))


if __name__ == "__main__":
    sys.exit(main())
