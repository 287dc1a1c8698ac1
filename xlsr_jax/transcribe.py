"""Transcribe audio files with a fine-tuned CTC model.

    python -m xlsr_jax.transcribe --ckpt DIR [--batch_size 8] [--lm LM.arpa] AUDIO...

Prints one line per file, in the order given: `<path>\t<transcript>`. DIR is an exported
checkpoint (`xlsr_jax.pretrained` / `python -m xlsr_jax.convert hf-to-orbax`, which carry the
vocabulary) or a CTC training run (the --workdir, its checkpoints/ folder, a step or params
folder; a run gives its newest step; the vocabulary is rebuilt from the run's data config, as
during training). Which checkpoint was loaded is printed on stderr. Audio in any format and rate the data pipeline reads
(wav, flac, mp3, ogg, ...) is decoded, resampled to the model's rate and normalised as in training.

Files are sorted by length and batched into padded lengths rounded up to whole seconds (few
compilations). Group-norm models (wav2vec 2.0 base) normalise over time, so padding would change
their output: they run each file at its exact length. Greedy CTC decoding by default; `--lm`
(pyctcdecode + kenlm) or `--beam_width` (pyctcdecode) switch to beam search.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from xlsr_jax.constants import SAMPLE_RATE

log = logging.getLogger("xlsr_jax.transcribe")

PAD_TO_SAMPLES = SAMPLE_RATE  # padded lengths are multiples of one second


def load_inputs(
    paths: Sequence[str], audio_settings: dict[str, Any], config: Any = None
) -> tuple[list[np.ndarray | None], list[str]]:
    """Decodes every file as the model expects it (`xlsr_jax.inputs.decode_inputs`).

    Returns:
      (waveforms float32 [S] or None for skipped files, one message per skipped file).
    """
    from xlsr_jax import inputs

    return inputs.decode_inputs(paths, audio_settings, config)


def batches(
    waves: Sequence[np.ndarray | None], batch_size: int, exact_lengths: bool
) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
    """Length-sorted padded batches.

    Yields:
      (indices into `waves`, audio float32 [B, S], padding_mask bool [B, S] True at padding).
    """
    order = sorted((i for i, w in enumerate(waves) if w is not None), key=lambda i: waves[i].size)
    size = 1 if exact_lengths else batch_size
    for start in range(0, len(order), size):
        idx = order[start : start + size]
        longest = max(waves[i].size for i in idx)
        length = longest if exact_lengths else -(-longest // PAD_TO_SAMPLES) * PAD_TO_SAMPLES
        audio = np.zeros((len(idx), length), np.float32)
        padding = np.ones((len(idx), length), bool)
        for row, i in enumerate(idx):
            audio[row, : waves[i].size] = waves[i]
            padding[row, : waves[i].size] = False
        yield idx, audio, padding


def load_vocabulary(ckpt: str, loaded: Any):
    """The checkpoint's CTC vocabulary: stored in an export, rebuilt from a run's data config."""
    import ml_collections

    import data_pipelines

    if loaded.vocab:
        tokens = [t for t, _ in sorted(loaded.vocab.items(), key=lambda kv: kv[1])]
        return data_pipelines.Vocabulary(tokens)
    run = loaded.run_config
    if run is None or "data" not in run:
        raise ValueError(f"{ckpt}: no vocabulary stored with the checkpoint and no run config to rebuild it")
    return data_pipelines.build_vocabulary(ml_collections.ConfigDict(run["data"]))


class Transcriber:
    """A loaded CTC model with its vocabulary; `__call__(paths)` transcribes files."""

    def __init__(self, ckpt: str, *, batch_size: int = 8, lm: str | None = None, beam_width: int = 0):
        """Loads `ckpt` (see module docstring).

        Raises:
          ValueError: the checkpoint is not a CTC model or has no usable vocabulary.
          ImportError: beam search asked for without pyctcdecode (or kenlm for `lm`).
        """
        import jax

        from xlsr_jax import decoding, pretrained

        self.loaded = pretrained.load_pretrained(ckpt)
        if self.loaded.architecture != "Wav2Vec2ForCTC":
            raise ValueError(
                f"{ckpt}: a {self.loaded.architecture} checkpoint, not a CTC model "
                "(use python -m xlsr_jax.identify for language ID)"
            )
        self.vocabulary = load_vocabulary(ckpt, self.loaded)
        if len(self.vocabulary) != self.loaded.config.vocab_size:
            raise ValueError(
                f"{ckpt}: vocabulary has {len(self.vocabulary)} tokens, the CTC head {self.loaded.config.vocab_size}"
            )
        self.batch_size = batch_size
        self.exact_lengths = self.loaded.config.feat_extract_norm == "group"
        self.beam = None
        if lm or beam_width:
            self.beam = decoding.BeamSearchDecoder(self.vocabulary, lm, beam_width=beam_width or 100)
        model = self.loaded.model()
        params = jax.device_put(self.loaded.params)

        @jax.jit
        def forward(audio, padding_mask):
            logits, frame_padding = model.apply({"params": params}, audio, padding_mask, deterministic=True)
            return jax.nn.log_softmax(logits, -1), frame_padding, decoding.greedy_ids(logits, frame_padding)

        self._forward = forward

    def __call__(self, paths: Sequence[str]) -> tuple[list[str | None], list[str]]:
        """Transcripts in input order (None where a file failed) and the error messages."""
        from xlsr_jax import decoding

        waves, errors = load_inputs(paths, self.loaded.audio, self.loaded.config)
        out: list[str | None] = [None] * len(paths)
        for idx, audio, padding in batches(waves, self.batch_size, self.exact_lengths):
            log_probs, frame_padding, ids = self._forward(audio, padding)
            if self.beam is not None:
                texts = self.beam.decode(np.asarray(log_probs), np.asarray(frame_padding))
            else:
                texts = decoding.greedy_decode(np.asarray(ids), self.vocabulary)
            for i, text in zip(idx, texts):
                out[i] = text
        return out, errors


def build_parser(description: str = __doc__) -> argparse.ArgumentParser:
    """Flags shared with `xlsr_jax.identify`."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="exported checkpoint or training run directory")
    parser.add_argument("--batch_size", type=int, default=8, help="files per forward pass")
    parser.add_argument("audio", nargs="+", help="audio files (any format the data pipeline reads)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (1 when some file failed)."""
    parser = build_parser()
    parser.add_argument("--lm", default=None, help="KenLM n-gram (ARPA or binary) for beam search")
    parser.add_argument("--beam_width", type=int, default=0, help="beam search with this width (0 = greedy)")
    args = parser.parse_args(argv)
    from xlsr_jax import pretrained

    pretrained.setup_cli_logging()
    try:
        transcriber = Transcriber(args.ckpt, batch_size=args.batch_size, lm=args.lm, beam_width=args.beam_width)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    texts, errors = transcriber(args.audio)
    for path, text in zip(args.audio, texts):
        if text is not None:
            print(f"{path}\t{text}", flush=True)
    from xlsr_jax import inputs

    return inputs.report_skipped(errors, len(args.audio))


if __name__ == "__main__":
    sys.exit(main())
