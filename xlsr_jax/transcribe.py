"""Transcribe audio files with a fine-tuned CTC model.

    python -m xlsr_jax.transcribe --ckpt DIR [--batch_size 8] [--lm LM.arpa [--alpha A --beta B]] AUDIO...

Prints one line per file, in the order given: `<path>\t<transcript>`. DIR is an exported
checkpoint (`xlsr_jax.pretrained` / `python -m xlsr_jax.convert hf-to-orbax`, which carry the
vocabulary) or a CTC training run (the --workdir, its checkpoints/ folder, a step or params
folder; a run gives its newest step; the vocabulary is rebuilt from the run's data config, as
during training). Which checkpoint was loaded is printed on stderr. Audio in any format and rate the data pipeline reads
(wav, flac, mp3, ogg, ...) is decoded, resampled to the model's rate and normalised as in training.

Files are sorted by length and batched into padded lengths rounded up to whole seconds (few
compilations). Group-norm models (wav2vec 2.0 base) normalise over time, so padding would change
their output: they run each file at its exact length. Greedy CTC decoding by default; `--lm`
(a KenLM word n-gram, with `--alpha`, `--beta`, `--lexicon`) or `--beam_width` switch to
flashlight's beam search (`xlsr_jax.lm`, the `lm` extra). Transcripts follow the vocabulary's
tokenizer as transformers' `Wav2Vec2Processor.batch_decode` does (`decoding.CTCLabels`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from xlsr_jax.constants import SAMPLE_RATE

log = logging.getLogger("xlsr_jax.transcribe")

PAD_TO_SAMPLES = SAMPLE_RATE  # padded lengths are multiples of one second
# Long recordings: 20 s chunks with 4 s of context each side (12 s kept per chunk); 20 s is
# fairseq's fine-tuning max_sample_size (320000 samples), the longest input the model saw.
CHUNK_S, STRIDE_S = 20.0, 4.0


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


def load_labels(ckpt: str, loaded: Any):
    """The checkpoint's CTC labels (`decoding.CTCLabels`, tokens by name).

    An export carries its vocabulary and tokenizer settings (`convert hf-to-orbax` keeps the hub
    layout as it is); a training run's vocabulary is rebuilt from its data config.
    """
    import ml_collections

    import data_pipelines
    from xlsr_jax import decoding

    run = loaded.run_config
    if run is not None and "data" in run:  # a training run: the vocabulary as the pipeline built it
        vocabulary = data_pipelines.build_vocabulary(ml_collections.ConfigDict(run["data"]))
        return decoding.CTCLabels.of_vocabulary(vocabulary)
    if loaded.vocab:
        return decoding.CTCLabels.from_vocab(loaded.vocab, loaded.hf_extras.get(decoding.TOKENIZER_EXTRA))
    raise ValueError(f"{ckpt}: no vocabulary stored with the checkpoint and no run config to rebuild it")


class Transcriber:
    """A loaded CTC model with its labels; `__call__(paths)` transcribes files."""

    def __init__(
        self,
        ckpt: str,
        *,
        batch_size: int = 8,
        lm: str | None = None,
        lexicon: str | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        beam_width: int = 0,
        chunk_s: float = CHUNK_S,
        stride_s: float = STRIDE_S,
    ):
        """Loads `ckpt` (see module docstring).

        Args:
          batch_size: files (or chunks of long files) per forward pass.
          chunk_s, stride_s: files longer than `chunk_s` seconds run in chunks of that length
            overlapping by 2 * `stride_s` (`chunks`); chunk_s 0 runs every file whole.
          lm, lexicon, alpha, beta, beam_width: beam search (`xlsr_jax.lm.BeamSearchDecoder`);
            greedy when neither `lm` nor `beam_width` is given.
        Raises:
          ValueError: the checkpoint is not a CTC model or has no usable vocabulary.
          ImportError: beam search asked for without flashlight-text.
        """
        import jax

        from xlsr_jax import decoding, pretrained
        from xlsr_jax import lm as lm_lib

        self.loaded = pretrained.load_pretrained(ckpt)
        if self.loaded.architecture != "Wav2Vec2ForCTC":
            raise ValueError(
                f"{ckpt}: a {self.loaded.architecture} checkpoint, not a CTC model "
                "(use python -m xlsr_jax.identify for language ID)"
            )
        self.labels = load_labels(ckpt, self.loaded)
        if len(self.labels) != self.loaded.config.vocab_size:
            raise ValueError(
                f"{ckpt}: vocabulary has {len(self.labels)} tokens, the CTC head {self.loaded.config.vocab_size}"
            )
        self.batch_size = batch_size
        rate = int(self.loaded.audio.get("sampling_rate", SAMPLE_RATE))
        self.hop = int(np.prod(self.loaded.config.conv_stride))  # samples per output frame
        # Chunk and stride in whole frames, so every chunk's frames fall on one grid.
        self.chunk_samples = int(round(chunk_s * rate / self.hop)) * self.hop if chunk_s else 0
        self.stride_samples = int(round(stride_s * rate / self.hop)) * self.hop
        if self.chunk_samples:
            chunks(2 * self.chunk_samples, self.chunk_samples, self.stride_samples, self.hop)  # validates
        self.exact_lengths = self.loaded.config.feat_extract_norm == "group"
        self.beam = None
        if lm or beam_width:
            self.beam = lm_lib.BeamSearchDecoder(
                self.labels,
                lm,
                lexicon=lexicon,
                alpha=lm_lib.DEFAULT_ALPHA if alpha is None else alpha,
                beta=lm_lib.DEFAULT_BETA if beta is None else beta,
                beam_width=beam_width or lm_lib.DEFAULT_BEAM_WIDTH,
            )
        model = self.loaded.model()
        params = jax.device_put(self.loaded.params)

        @jax.jit
        def forward(audio, padding_mask):
            logits, frame_padding = model.apply({"params": params}, audio, padding_mask, deterministic=True)
            return (
                jax.nn.log_softmax(logits, -1),
                frame_padding,
                decoding.greedy_ids(logits, frame_padding, self.labels.blank_id),
            )

        self._forward = forward

    def emissions(self, paths: Sequence[str]) -> tuple[list[Emissions | None], list[str]]:
        """Per-file model outputs in input order (None where a file failed) and error messages.

        Files up to `chunk_s` long run whole (length-sorted padded batches); longer ones run as
        chunks of exactly `chunk_s` (`chunks`), all in batches of `batch_size` rows, so the
        model compiles once for every long file, and memory does not grow with the length.
        """
        waves, errors = load_inputs(paths, self.loaded.audio, self.loaded.config)
        out: list[Emissions | None] = [None] * len(paths)
        chunk = self.chunk_samples
        whole = [w if w is not None and (not chunk or w.size <= chunk) else None for w in waves]
        for idx, audio, padding in batches(whole, self.batch_size, self.exact_lengths):
            log_probs, frame_padding, ids = (np.asarray(x) for x in self._forward(audio, padding))
            for row, i in enumerate(idx):
                keep = ~frame_padding[row]
                frames = int(keep.sum())
                out[i] = Emissions(log_probs[row][keep], ids[row][keep], np.arange(frames) * self.hop)
        long = [i for i, w in enumerate(waves) if w is not None and chunk and w.size > chunk]
        pieces = [
            (i, start, keep_from, keep_to)
            for i in long
            for start, keep_from, keep_to in chunks(waves[i].size, chunk, self.stride_samples, self.hop)
        ]
        parts: dict[int, list[Emissions]] = {i: [] for i in long}
        for first in range(0, len(pieces), self.batch_size):
            group = pieces[first : first + self.batch_size]
            # Always batch_size rows (empty ones at the end): one compiled shape for all chunks.
            audio = np.zeros((self.batch_size, chunk), np.float32)
            padding = np.ones((self.batch_size, chunk), bool)
            for row, (i, start, _, _) in enumerate(group):
                piece = waves[i][start : start + chunk]
                audio[row, : piece.size] = piece
                padding[row, : piece.size] = False
            log_probs, frame_padding, ids = (np.asarray(x) for x in self._forward(audio, padding))
            for row, (i, start, keep_from, keep_to) in enumerate(group):
                times = start + np.arange(log_probs.shape[1]) * self.hop
                sel = (times >= keep_from) & (times < keep_to) & ~frame_padding[row]
                parts[i].append(Emissions(log_probs[row][sel], ids[row][sel], times[sel]))
        for i in long:
            out[i] = Emissions(
                *(np.concatenate([getattr(p, f) for p in parts[i]]) for f in ("log_probs", "ids", "times"))
            )
        return out, errors

    def decode(self, emissions: Emissions) -> tuple[str, list[tuple[int, int, int]]]:
        """(transcript, kept tokens as (id, start frame, end frame)) of one file's outputs."""
        if self.beam is not None:
            hyp = self.beam.decode_one(emissions.log_probs)
            return hyp.text, hyp.tokens
        tokens = self.labels.collapse(emissions.ids)
        return self.labels.text(i for i, _, _ in tokens), tokens

    def __call__(self, paths: Sequence[str]) -> tuple[list[str | None], list[str]]:
        """Transcripts in input order (None where a file failed) and the error messages."""
        outputs, errors = self.emissions(paths)
        return [None if e is None else self.decode(e)[0] for e in outputs], errors

    def timestamps(self, emissions: Emissions, unit: str) -> dict[str, Any]:
        """{"text", unit + "s": [{unit: text, "start": s, "end": s}]}, times in seconds.

        A token spans its frames as transformers' `output_char_offsets` counts them (first frame
        to one past its last); a frame is `hop` samples (320 at 16 kHz = 20 ms) from its start.
        Words are the runs of tokens between word delimiters.
        """
        text, tokens = self.decode(emissions)
        rate = float(self.loaded.audio.get("sampling_rate", SAMPLE_RATE))
        times = emissions.times

        def span(first: tuple[int, int, int], last: tuple[int, int, int]) -> tuple[float, float]:
            return round(times[first[1]] / rate, 3), round((times[last[2] - 1] + self.hop) / rate, 3)

        units = []
        if unit == "char":
            for tok in tokens:
                if tok[0] != self.labels.delimiter_id:
                    start, end = span(tok, tok)
                    units.append({"char": self.labels.token_text(tok[0]), "start": start, "end": end})
        else:
            word: list[tuple[int, int, int]] = []
            for tok in [*tokens, None]:
                if tok is None or tok[0] == self.labels.delimiter_id:
                    if word:
                        start, end = span(word[0], word[-1])
                        text_w = self.labels.text(i for i, _, _ in word)
                        units.append({"word": text_w, "start": start, "end": end})
                    word = []
                else:
                    word.append(tok)
        return {"text": text, f"{unit}s": units}


@dataclasses.dataclass
class Emissions:
    """One file's model outputs: log_probs float32 [frames, vocab], greedy ids int32 [frames],
    times int [frames] (each frame's first sample in the file)."""

    log_probs: np.ndarray
    ids: np.ndarray
    times: np.ndarray


def chunks(num_samples: int, chunk: int, stride: int, hop: int) -> list[tuple[int, int, int]]:
    """Chunk plan of a long recording, as transformers' ASR pipeline strides (chunk_iter).

    Chunks of exactly `chunk` samples advance by `chunk - 2 * stride`; each keeps the frames
    (by first sample) from where the previous one stopped to `stride` before its end, the last
    one to the end. Starts stay on the frame grid (multiples of `hop`), so every kept frame is
    the frame the whole recording would have there; the last chunk starts at the first grid
    point from which `chunk` samples reach the end (padded by less than `hop` samples).

    Returns:
      [(start sample, keep frames from sample, keep frames before sample)].
    Raises:
      ValueError: stride too large for the chunk (`chunk - 2 * stride` below one frame).
    """
    step = chunk - 2 * stride
    if step < hop:
        raise ValueError(f"--stride_s must be below half of --chunk_s (chunk {chunk}, stride {stride} samples)")
    plan, kept_to, start = [], 0, 0
    while True:
        start = min(start, -(-(num_samples - chunk) // hop) * hop)  # the last: on the frame grid
        last = start + chunk >= num_samples
        keep_to = num_samples if last else start + chunk - stride
        plan.append((start, kept_to, keep_to))
        if last:
            return plan
        kept_to, start = keep_to, start + step


def build_parser(description: str = __doc__) -> argparse.ArgumentParser:
    """Flags shared with `xlsr_jax.identify`."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="exported checkpoint or training run directory")
    parser.add_argument("--batch_size", type=int, default=8, help="files per forward pass")
    parser.add_argument("audio", nargs="+", help="audio files (any format the data pipeline reads)")
    return parser


def add_lm_flags(parser: argparse.ArgumentParser) -> None:
    """--lm, --lexicon, --alpha, --beta, --beam_width (shared with `xlsr_jax.evaluate`)."""
    from xlsr_jax import lm

    parser.add_argument("--lm", default=None, help="KenLM word n-gram (ARPA or binary) for beam search")
    parser.add_argument("--lexicon", default=None, help="words the LM search may output (default: the ARPA's)")
    parser.add_argument("--alpha", type=float, default=None, help=f"LM weight (default {lm.DEFAULT_ALPHA})")
    parser.add_argument("--beta", type=float, default=None, help=f"score per word (default {lm.DEFAULT_BETA})")
    parser.add_argument(
        "--beam_width", type=int, default=0, help=f"beam width (default {lm.DEFAULT_BEAM_WIDTH} with --lm; 0 = greedy)"
    )


def lm_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The beam-search keyword arguments of `Transcriber` from `add_lm_flags`' flags."""
    names = ("lm", "lexicon", "alpha", "beta", "beam_width")
    return {name: getattr(args, name) for name in names}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (1 when some file failed)."""
    parser = build_parser()
    add_lm_flags(parser)
    parser.add_argument("--chunk_s", type=float, default=CHUNK_S, help="chunk length for long files (0 = whole)")
    parser.add_argument("--stride_s", type=float, default=STRIDE_S, help="context each side of a chunk, seconds")
    parser.add_argument(
        "--timestamps", choices=("word", "char"), default=None, help="print JSON lines with each unit's start/end"
    )
    args = parser.parse_args(argv)
    from xlsr_jax import pretrained

    pretrained.setup_cli_logging()
    try:
        transcriber = Transcriber(
            args.ckpt, batch_size=args.batch_size, chunk_s=args.chunk_s, stride_s=args.stride_s, **lm_kwargs(args)
        )
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    outputs, errors = transcriber.emissions(args.audio)
    for path, emissions in zip(args.audio, outputs):
        if emissions is None:
            continue
        if args.timestamps:
            row = {"path": path, **transcriber.timestamps(emissions, args.timestamps)}
            print(json.dumps(row, ensure_ascii=False), flush=True)
        else:
            print(f"{path}\t{transcriber.decode(emissions)[0]}", flush=True)
    from xlsr_jax import inputs

    return inputs.report_skipped(errors, len(args.audio))


if __name__ == "__main__":
    sys.exit(main())
