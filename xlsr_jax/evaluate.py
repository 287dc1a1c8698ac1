"""Evaluate a CTC training run on a split: greedy and LM WER/CER per language, per utterance.

    python -m xlsr_jax.evaluate --ckpt RUN/checkpoints [--split test] [--lm LM.arpa] [--out DIR]
    python -m xlsr_jax.evaluate --ckpt RUN/checkpoints --split dev --lm LM.arpa --tune

The data, vocabulary and model come from the config stored with the run's checkpoint (newest
step, or the step directory given); batches and decoding are the trainer's evaluation
(`tasks.finetune.collect_eval_records` + `tasks.ctc.ctc_report`), so `--split` = the run's
`eval.split` gives the numbers the trainer logged for that step (`eval/wer`, `eval/cer`).
`--config.eval.x=y`-style changes are `--num_batches` and the LM flags.

Prints a table: language, utterances, greedy WER/CER and, with `--lm`, LM WER/CER. With `--out DIR`
writes DIR/utterances.jsonl (language, reference, hypothesis, [hypothesis_lm], wer, cer[, wer_lm,
cer_lm]) and DIR/report.json (the trainer's eval report format). `--tune` decodes the split for
each `--alphas` x `--betas` pair and prints them by WER (pick alpha/beta on dev, report on test).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

STEP_PARAMS = "params"


def load_run(ckpt: str, split: str | None, num_batches: int | None, lm_args: dict[str, Any]):
    """(config, task, params, step) of a CTC training checkpoint, with evaluation overrides."""
    import ml_collections

    from xlsr_jax import checkpointing, tasks

    found = checkpointing.resolve(ckpt)  # CheckpointNotFoundError (a FileNotFoundError): one line
    config = ml_collections.ConfigDict(checkpointing.read_config(ckpt))
    if config.get("task") != "ctc":
        raise ValueError(f"{ckpt}: a {config.get('task')!r} run; evaluate scores CTC runs")
    with config.unlocked():
        if split:
            config.eval.split = split
        if num_batches:
            config.eval.num_batches = num_batches
        if lm_args.get("lm"):
            config.eval.lm = lm_args["lm"]
            config.eval.lm_lexicon = lm_args.get("lexicon") or ""
            for key in ("alpha", "beta"):
                if lm_args.get(key) is not None:
                    config.eval[f"lm_{key}"] = lm_args[key]
            if lm_args.get("beam_width"):  # 0 = the default width
                config.eval.lm_beam_width = lm_args["beam_width"]
    params = checkpointing.read_params_numpy(found.params_dir)
    return config, tasks.create_task(config), params, found.step


def per_utterance(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Adds each utterance's own WER/CER (and the LM's) to report rows."""
    from xlsr_jax import decoding

    out = []
    for row in rows:
        row = dict(row)
        for key, suffix in (("hypothesis", ""), ("hypothesis_lm", "_lm")):
            if key in row:
                counts = decoding.error_counts([row["reference"]], [row[key]])
                row[f"wer{suffix}"], row[f"cer{suffix}"] = counts.wer, counts.cer
        out.append(row)
    return out


def table(report: dict[str, Any]) -> str:
    """Per-language text table of greedy (and LM) WER/CER."""
    lm = report["counts_lm"]
    head = ["language", "utts", "WER", "CER"] + (["WER+LM", "CER+LM"] if lm else [])
    lines = ["\t".join(head)]
    for lang, c in report["counts"].items():
        cells = [lang, str(c.utterances), f"{100 * c.wer:.2f}", f"{100 * c.cer:.2f}"]
        if lm:
            cells += [f"{100 * lm[lang].wer:.2f}", f"{100 * lm[lang].cer:.2f}"]
        lines.append("\t".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    from xlsr_jax import transcribe

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a CTC run (workdir, checkpoints/: newest step) or a step")
    parser.add_argument("--split", default=None, help="split to score (default: the run's eval.split)")
    parser.add_argument("--num_batches", type=int, default=None, help="batches to score (default: eval.num_batches)")
    parser.add_argument("--out", default=None, help="write utterances.jsonl and report.json here")
    parser.add_argument("--tune", action="store_true", help="grid-search --alphas x --betas with --lm")
    parser.add_argument("--alphas", default="0,0.25,0.5,1,2", help="--tune: comma-separated LM weights")
    parser.add_argument("--betas", default="0,0.5,1,2", help="--tune: comma-separated word scores")
    transcribe.add_lm_flags(parser)
    args = parser.parse_args(argv)
    if args.tune and not args.lm:
        parser.error("--tune needs --lm")
    from xlsr_jax import decoding, lm
    from xlsr_jax.tasks import ctc, finetune

    try:
        config, task, params, step = load_run(args.ckpt, args.split, args.num_batches, transcribe.lm_kwargs(args))
        records = finetune.collect_eval_records(task, params, config.data, config.eval.split, config.eval.num_batches)
        if args.tune:
            refs = ctc.ctc_report(records, task.vocabulary, task.languages)["utterances"]
            refs = [row["reference"] for row in refs]
            labels = decoding.CTCLabels.of_vocabulary(task.vocabulary)
            settings = dict(task.lm_settings)

            def decode(alpha, beta):
                beam = lm.BeamSearchDecoder(labels, **{**settings, "alpha": alpha, "beta": beta})
                return ctc.ctc_report(records, task.vocabulary, task.languages, beam=beam)["utterances"]

            rows = lm.tune(
                lambda a, b: [row["hypothesis_lm"] for row in decode(a, b)],
                refs,
                [float(a) for a in args.alphas.split(",")],
                [float(b) for b in args.betas.split(",")],
            )
            print("alpha\tbeta\tWER\tCER")
            for row in rows:
                print(f"{row['alpha']:g}\t{row['beta']:g}\t{100 * row['wer']:.2f}\t{100 * row['cer']:.2f}")
            return 0
        report = ctc.ctc_report(records, task.vocabulary, task.languages, task.report_examples, task.beam_decoder())
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"step {step}, split {config.eval.split}")
    print(table(report))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "utterances.jsonl"), "w", encoding="utf-8") as f:
            for row in per_utterance(report["utterances"]):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        extra = {"split": config.eval.split}
        if report["counts_lm"] is not None:
            extra["per_language_lm"] = {k: v.as_dict() for k, v in report["counts_lm"].items()}
        decoding.write_report(
            os.path.join(args.out, "report.json"), report["counts"], step=step, examples=report["examples"], extra=extra
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
