"""`make demo`: the whole xlsr-jax workflow on the shipped corpus, on a CPU, in stages.

    python experiments/demo.py --workdir demo_out [--stages pretrain] [--config_arg steps=150]

Stages run in order, each in `<workdir>/<stage>/`, and each is skipped when its output is already
complete (re-running resumes). Stages so far:

  pretrain   self-supervised pretraining of the tiny model (configs/demo.py) via the trainer

Later stages (fine-tuning, transcription, export) append themselves to `STAGES`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

log = logging.getLogger("demo")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a fresh clone without installing


def _read_metrics(workdir: str) -> dict[int, dict[str, float]]:
    rows: dict[int, dict[str, float]] = {}
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                rows.setdefault(row.pop("step"), {}).update(row)
    return rows


def stage_pretrain(workdir: str, args: argparse.Namespace) -> dict:
    """Pretrains the tiny model on the demo corpus; returns a summary of its metrics."""
    from configs import demo
    from xlsr_jax import trainer

    config = demo.get_config(args.config_arg)
    start = time.perf_counter()
    trainer.train_and_evaluate(config, workdir)
    metrics = _read_metrics(workdir)
    train_steps = sorted(s for s, m in metrics.items() if "train/loss" in m)
    eval_steps = sorted(s for s, m in metrics.items() if "eval/loss" in m)
    summary = {
        "steps": config.train.total_steps,
        "seconds": round(time.perf_counter() - start, 1),
        "first_train_loss": metrics[train_steps[0]]["train/loss"] if train_steps else None,
        "last_train_loss": metrics[train_steps[-1]]["train/loss"] if train_steps else None,
        "first_eval_loss": metrics[eval_steps[0]]["eval/loss"] if eval_steps else None,
        "last_eval_loss": metrics[eval_steps[-1]]["eval/loss"] if eval_steps else None,
        "last_code_perplexity": metrics[train_steps[-1]].get("train/code_perplexity") if train_steps else None,
        "audio_sec_per_sec": metrics[train_steps[-1]].get("perf/audio_sec_per_sec") if train_steps else None,
        "checkpoints": os.path.join(workdir, "checkpoints"),
    }
    return summary


# (name, function): run in this order; later stages may read earlier stages' directories.
STAGES = [
    ("pretrain", stage_pretrain),
]


def main(argv: list[str] | None = None) -> None:
    """Parses flags and runs the selected stages, printing a JSON summary per stage."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="output directory (one subdirectory per stage)")
    parser.add_argument(
        "--stages", default=",".join(name for name, _ in STAGES), help="comma-separated stages to run (default: all)"
    )
    parser.add_argument("--config_arg", default=None, help="argument for configs/demo.py, e.g. steps=300")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax", "orbax", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    known = dict(STAGES)
    selected = [s for s in args.stages.split(",") if s]
    unknown = [s for s in selected if s not in known]
    if unknown:
        parser.error(f"unknown stages {unknown}; available: {list(known)}")
    summaries = {}
    for name, fn in STAGES:
        if name not in selected:
            continue
        stage_dir = os.path.join(os.path.abspath(args.workdir), name)
        os.makedirs(stage_dir, exist_ok=True)
        log.info("=== stage %s -> %s", name, stage_dir)
        summaries[name] = fn(stage_dir, args)
        print(json.dumps({name: summaries[name]}, indent=2), flush=True)
    with open(os.path.join(args.workdir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summaries, f, indent=2)


if __name__ == "__main__":
    main()
