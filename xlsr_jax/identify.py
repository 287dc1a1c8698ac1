"""Identify the language of audio files with a fine-tuned language-ID model.

    python -m xlsr_jax.identify --ckpt DIR [--top_k 3] [--batch_size 8] AUDIO...

Prints one line per file, in the order given: `<path>\t<lang> <prob>\t<lang> <prob>...` with the
`top_k` most probable languages. DIR is a language-ID training run (its --workdir, checkpoints/
folder, a step or params folder; the class names are the run's `data.languages`) or an exported
`Wav2Vec2ForSequenceClassification` checkpoint (class names from its `id2label`, else
`LABEL_<i>`). Audio handling as `xlsr_jax.transcribe`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from xlsr_jax import transcribe


def class_names(loaded) -> list[str]:
    """Language codes in class order (run config, else exported id2label, else LABEL_i)."""
    n = loaded.config.num_labels
    run = loaded.run_config
    if run is not None:
        languages = list((run.get("data") or {}).get("languages") or [])
        if len(languages) == n:
            return languages
    id2label = loaded.hf_extras.get("id2label") or {}
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]


class Identifier:
    """A loaded language-ID model; `__call__(paths)` returns class probabilities per file."""

    def __init__(self, ckpt: str, *, batch_size: int = 8):
        """Loads `ckpt`.

        Raises:
          ValueError: the checkpoint is not a sequence classifier.
        """
        import jax

        from xlsr_jax import pretrained

        self.loaded = pretrained.load_pretrained(ckpt)
        if self.loaded.architecture != "Wav2Vec2ForSequenceClassification":
            raise ValueError(
                f"{ckpt}: a {self.loaded.architecture} checkpoint, not a language-ID "
                "classifier (use python -m xlsr_jax.transcribe for CTC models)"
            )
        self.labels = class_names(self.loaded)
        self.batch_size = batch_size
        self.exact_lengths = self.loaded.config.feat_extract_norm == "group"
        model = self.loaded.model()
        params = jax.device_put(self.loaded.params)
        self._forward = jax.jit(
            lambda audio, padding: jax.nn.softmax(
                model.apply({"params": params}, audio, padding, deterministic=True), axis=-1
            )
        )

    def __call__(self, paths: Sequence[str]) -> tuple[list[np.ndarray | None], list[str]]:
        """Probabilities float32 [num_labels] per file (None where a file failed), and errors."""
        waves, errors = transcribe.load_inputs(paths, self.loaded.audio, self.loaded.config)
        out: list[np.ndarray | None] = [None] * len(paths)
        for idx, audio, padding in transcribe.batches(waves, self.batch_size, self.exact_lengths):
            probs = np.asarray(self._forward(audio, padding))  # [B, num_labels]
            for i, p in zip(idx, probs):
                out[i] = p
        return out, errors


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (1 when some file failed)."""
    parser = transcribe.build_parser(__doc__)
    parser.add_argument("--top_k", type=int, default=3, help="languages printed per file")
    args = parser.parse_args(argv)
    from xlsr_jax import pretrained

    pretrained.setup_cli_logging()
    try:
        identifier = Identifier(args.ckpt, batch_size=args.batch_size)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    probs, errors = identifier(args.audio)
    for path, p in zip(args.audio, probs):
        if p is None:
            continue
        top = np.argsort(-p)[: max(1, args.top_k)]
        print(path + "".join(f"\t{identifier.labels[i]} {p[i]:.3f}" for i in top), flush=True)
    from xlsr_jax import inputs

    return inputs.report_skipped(errors, len(args.audio))


if __name__ == "__main__":
    sys.exit(main())
