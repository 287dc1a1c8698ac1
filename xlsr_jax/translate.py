"""Translate audio files with a speech-translation model (XLS-R + adapter + mBART decoder).

    python -m xlsr_jax.translate --ckpt DIR [--tgt_lang en] [--beam 5] AUDIO...

Prints one line per file, in the order given: `<path>\t<translation>`. DIR is an exported
translation checkpoint (`python -m xlsr_jax.convert hf-to-orbax` of a transformers
SpeechEncoderDecoderModel folder such as facebook/wav2vec2-xls-r-300m-21-to-en) or an `st`
training run (workdir, checkpoints/, a step); its tokenizer (DIR/tokenizer/sentencepiece.bpe.model,
or the run's data.target.tokenizer) turns ids into text, and its generation settings (the
export's generation_config.json, the run's `st` evaluation search and target language) are the
defaults that the flags override.

`--tgt_lang` (a locale such as `de` or an mBART-50 code such as `de_DE`) forces the target
language token as the first generated token; without it, the checkpoint's forced token is used.
Unreadable or empty files are named on stderr and skipped (exit status 1), as `transcribe` does.
Files are sorted by length and padded to whole seconds, so generation compiles once per
(batch, padded length).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from xlsr_jax.transcribe import batches, build_parser, load_inputs

log = logging.getLogger("xlsr_jax.translate")


class Translator:
    """A loaded translation model with its tokenizer; `__call__(paths)` translates files."""

    def __init__(
        self,
        ckpt: str,
        *,
        tgt_lang: str | None = None,
        beam: int | None = None,
        max_length: int | None = None,
        batch_size: int = 8,
    ):
        """Loads `ckpt` (see module docstring).

        Raises:
          ValueError: not a translation checkpoint, no tokenizer, or an unknown target language.
        """
        import jax

        from data_pipelines import translation
        from xlsr_jax import fileio, generation, pretrained

        self.loaded = pretrained.load_pretrained(ckpt)
        if self.loaded.architecture != pretrained.SPEECH_TRANSLATION:
            raise ValueError(
                f"{ckpt}: a {self.loaded.architecture} checkpoint, not a translation model "
                "(use python -m xlsr_jax.transcribe for CTC)"
            )
        spm = self.loaded.target_tokenizer_file()
        if not spm or not fileio.isfile(spm):
            raise ValueError(
                f"{ckpt}: no target tokenizer ({spm or 'none recorded'}); export it with its tokenizer files"
            )
        self.tokenizer = translation.TargetTokenizer(spm)
        settings = dict(self.loaded.generation or {})
        # A training run records its target language; an export its forced token id.
        tgt_lang = tgt_lang or settings.pop("target_language", None)
        overrides = {"num_beams": beam, "max_length": max_length}
        if tgt_lang:
            overrides["forced_bos_token_id"] = self.tokenizer.language_id(tgt_lang)
        # No longer than the decoder's position table (an export without generation settings).
        positions = self.loaded.config.decoder.max_position_embeddings
        settings["max_length"] = min(int(settings.get("max_length") or positions), positions)
        cfg = self.loaded.config
        tokens = {
            "decoder_start_token_id": cfg.decoder_start_token_id,
            "eos_token_id": cfg.eos_token_id,
            "pad_token_id": cfg.pad_token_id,
        }
        self.gen = generation.GenerationConfig.from_hf({**tokens, **settings}, **overrides)
        self.batch_size = batch_size
        self.model = self.loaded.model()
        self.params = jax.device_put(self.loaded.params)

    def __call__(self, paths: Sequence[str]) -> tuple[list[str | None], list[str]]:
        """Translations in input order (None where a file failed) and the error messages."""
        from xlsr_jax import generation

        waves, errors = load_inputs(paths, self.loaded.audio)
        out: list[str | None] = [None] * len(paths)
        for idx, audio, padding in batches(waves, self.batch_size, exact_lengths=False):
            result = generation.generate(self.model, self.params, audio, padding, self.gen)
            for i, ids in zip(idx, generation.trim(result)):
                out[i] = self.tokenizer.decode(ids)
        return out, errors


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (1 when some file failed)."""
    parser = build_parser(__doc__)
    parser.add_argument("--tgt_lang", default=None, help="target language (locale or mBART-50 code)")
    parser.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy; default: the checkpoint's)")
    parser.add_argument("--max_length", type=int, default=None, help="longest output in tokens (start token included)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        translator = Translator(
            args.ckpt, tgt_lang=args.tgt_lang, beam=args.beam, max_length=args.max_length, batch_size=args.batch_size
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    texts, errors = translator(args.audio)
    for path, text in zip(args.audio, texts):
        if text is not None:
            print(f"{path}\t{text}", flush=True)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
