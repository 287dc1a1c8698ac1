"""Command line: `python -m xlsr_jax.convert {hf-to-orbax,fairseq-to-orbax,orbax-to-hf} ...`.

Examples:
  python -m xlsr_jax.convert hf-to-orbax path/to/wav2vec2-xls-r-300m ckpt/xlsr300m
  python -m xlsr_jax.convert hf-to-orbax facebook/wav2vec2-xls-r-300m ckpt/xlsr300m [--revision REV]
  python -m xlsr_jax.convert fairseq-to-orbax xlsr_53_56k.pt ckpt/xlsr53 --override scan_layers=true
  python -m xlsr_jax.convert fairseq-to-orbax ft_ctc.pt ckpt/ctc --dict dict.ltr.txt
  python -m xlsr_jax.convert orbax-to-hf ckpt/ctc hf_out/ [--vocab vocab.json] [--lm lm.arpa]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from xlsr_jax import convert

CKPT_HELP = "exported checkpoint or training run (--workdir, checkpoints/, a step or params folder)"


def _parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--override expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # bare strings: dtype=bfloat16
    return out


def _parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(
        prog="python -m xlsr_jax.convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--overwrite", action="store_true", help="replace an existing output")

    h = sub.add_parser("hf-to-orbax", parents=[common], help="transformers Wav2Vec2 folder -> our checkpoint")
    h.add_argument(
        "hf_folder", help="folder with config.json and model.safetensors / pytorch_model.bin, or a hub model id"
    )
    h.add_argument("--revision", default=None, help="hub id: branch, tag or commit (default main)")
    h.add_argument("out_dir", help="checkpoint directory to create")
    h.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a Wav2Vec2Config field, e.g. scan_layers=true (repeatable)",
    )
    h.add_argument(
        "--sampling_rate",
        type=int,
        help="the model's input rate in Hz, when the folder has no preprocessor/processor config",
    )
    h.add_argument(
        "--do_normalize",
        type=_parse_bool,
        metavar="true|false",
        help="per-utterance zero-mean unit-variance input, when the folder does not say",
    )

    f = sub.add_parser("fairseq-to-orbax", parents=[common], help="fairseq wav2vec 2.0 .pt -> our checkpoint")
    f.add_argument("checkpoint", help="fairseq .pt (pretrained or CTC fine-tuned)")
    f.add_argument("out_dir", help="checkpoint directory to create")
    f.add_argument("--dict", dest="dict_path", help="CTC: fairseq dict.ltr.txt (the vocabulary)")
    f.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")

    o = sub.add_parser("orbax-to-hf", parents=[common], help="our checkpoint -> transformers folder")
    o.add_argument("ckpt_dir", help=CKPT_HELP)
    o.add_argument("out_folder", help="transformers folder to create")
    o.add_argument("--vocab", help="CTC: vocab.json {token: id} if the checkpoint has none")
    o.add_argument("--labels", help="classifier: JSON list of class names in id order (e.g. language codes)")
    o.add_argument("--lm", help="CTC: KenLM file to add as language_model/ (Wav2Vec2ProcessorWithLM)")
    o.add_argument("--alpha", type=float, default=0.5, help="with --lm: LM weight stored in attrs.json")
    o.add_argument("--beta", type=float, default=1.0, help="with --lm: word score stored in attrs.json")
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs one conversion; prints the output path. Errors are reported in one line, exit 1."""
    args = build_parser().parse_args(argv)
    from xlsr_jax import pretrained

    pretrained.setup_cli_logging()
    # What the converter read and assumed (audio settings, defaults) is logged: show it.
    logging.getLogger("xlsr_jax.convert").setLevel(logging.INFO)
    try:
        if args.command == "hf-to-orbax":
            out = convert.hf_to_orbax(
                args.hf_folder,
                args.out_dir,
                overrides=_parse_overrides(args.override),
                audio={"sampling_rate": args.sampling_rate, "do_normalize": args.do_normalize},
                overwrite=args.overwrite,
                revision=args.revision,
            )
        elif args.command == "fairseq-to-orbax":
            out = convert.fairseq_to_orbax(
                args.checkpoint,
                args.out_dir,
                dict_path=args.dict_path,
                overrides=_parse_overrides(args.override),
                overwrite=args.overwrite,
            )
        else:
            vocab = None
            if args.vocab:
                with open(args.vocab, encoding="utf-8") as fh:
                    vocab = json.load(fh)
            labels = None
            if args.labels:
                with open(args.labels, encoding="utf-8") as fh:
                    labels = json.load(fh)
            out = convert.orbax_to_hf(
                args.ckpt_dir,
                args.out_folder,
                vocab=vocab,
                labels=labels,
                lm=args.lm,
                alpha=args.alpha,
                beta=args.beta,
                overwrite=args.overwrite,
            )
    except (
        convert.ConfigError,
        convert.CheckpointMismatchError,
        convert.UnsafeCheckpointError,
        FileNotFoundError,
        FileExistsError,
        ValueError,
        ImportError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
