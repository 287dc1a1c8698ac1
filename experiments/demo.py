"""`make demo`: the whole xlsr-jax workflow on the shipped corpus, on a CPU, in stages.

    python experiments/demo.py --workdir demo_out [--stages pretrain] [--config_arg steps=150]

Stages run in order, each in `<workdir>/<stage>/`, and each is skipped when its output is already
complete (re-running resumes). Stages:

  pretrain      self-supervised pretraining of the tiny model (configs/demo.py) via the trainer
  finetune_ctc  CTC fine-tuning from it (configs/finetune/demo_ctc.py); CER per language on test
  transcribe    `xlsr_jax.transcribe` on held-out test clips
  export        our export format + a transformers (PyTorch) folder; logits parity when torch is here
  lid           language ID from the fine-tuned encoder (configs/finetune/demo_lid.py); accuracy on test
  translate     speech translation X -> English from the fine-tuned encoder (configs/finetune/demo_st.py);
                BLEU/chrF before and after on train and dev, translations of test clips
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


def _pretrained_checkpoint(workdir: str) -> str:
    """The pretrain stage's checkpoints (sibling directory), or "" (fine-tune from scratch)."""
    ckpt = os.path.join(os.path.dirname(workdir), "pretrain", "checkpoints")
    if os.path.isdir(ckpt) and any(name.isdigit() for name in os.listdir(ckpt)):
        return ckpt
    log.warning("no pretrained checkpoint at %s: fine-tuning from random initialisation", ckpt)
    return ""


def _finetune(config, workdir: str, split: str):
    """Trains `config` in `workdir`; returns (eval metrics of the final parameters on the whole
    `split`, training seconds, the task, the eval records)."""
    from xlsr_jax import pretrained, tasks, trainer
    from xlsr_jax.tasks import finetune

    start = time.perf_counter()
    trainer.train_and_evaluate(config, workdir)
    seconds = time.perf_counter() - start
    task = tasks.create_task(config)
    params = pretrained.load_pretrained(os.path.join(workdir, "checkpoints")).params
    records = finetune.collect_eval_records(task, params, config.data, split)
    return task.eval_report(records, config.train.total_steps, None), seconds, task, records


def stage_finetune_ctc(workdir: str, args: argparse.Namespace) -> dict:
    """CTC fine-tuning from the pretrained checkpoint (configs/finetune/demo_ctc.py); CER per
    language on the held-out test split (greedy decoding) into test_report.json."""
    from configs.finetune import demo_ctc
    from xlsr_jax import decoding
    from xlsr_jax.tasks import ctc

    config = demo_ctc.get_config(args.finetune_arg)
    config.init.checkpoint = config.init.checkpoint or _pretrained_checkpoint(workdir)
    _, seconds, task, records = _finetune(config, workdir, "test")
    report = ctc.ctc_report(records, task.vocabulary, task.languages, num_examples=2)
    decoding.write_report(
        os.path.join(workdir, "test_report.json"),
        report["counts"],
        step=config.train.total_steps,
        examples=report["examples"],
    )
    return {
        "steps": config.train.total_steps,
        "seconds": round(seconds, 1),
        "init": config.init.checkpoint or "random",
        "test_cer": {k: round(v.cer, 3) for k, v in report["counts"].items()},
        "test_wer": {k: round(v.wer, 3) for k, v in report["counts"].items()},
        "checkpoints": os.path.join(workdir, "checkpoints"),
    }


def stage_transcribe(workdir: str, args: argparse.Namespace) -> dict:
    """Transcribes the first test clips of each language with `xlsr_jax.transcribe`, greedy and
    with an LM made from the run's training transcripts."""
    import data_pipelines
    from xlsr_jax.transcribe import Transcriber

    ckpt = os.path.join(os.path.dirname(workdir), "finetune_ctc", "checkpoints")
    config_langs = json.load(open(os.path.join(os.path.dirname(ckpt), "config.json"), encoding="utf-8"))
    languages = config_langs["data"]["languages"]
    paths, refs = [], []
    for lang in languages:
        with open(os.path.join(data_pipelines.DEMO_CORPUS_DIR, lang, "test.tsv"), encoding="utf-8") as f:
            rows = [line.rstrip("\n").split("\t") for line in f][1:]
        for row in rows[: args.transcribe_per_language]:
            paths.append(os.path.join(data_pipelines.DEMO_CORPUS_DIR, lang, "clips", row[1]))
            refs.append(row[2])
    start = time.perf_counter()
    texts, errors = Transcriber(ckpt)(paths)
    seconds = round(time.perf_counter() - start, 1)
    # The same files with LM beam search: a trigram of the run's training transcripts (xlsr_jax.lm).
    import ml_collections

    from xlsr_jax import lm

    os.makedirs(workdir, exist_ok=True)
    arpa = os.path.join(workdir, "train_3gram.arpa")
    lm.write_arpa(lm.training_sentences(ml_collections.ConfigDict(config_langs["data"])), arpa, order=3)
    texts_lm, _ = Transcriber(ckpt, lm=arpa, alpha=1.0, beta=0.0)(paths)
    rows = [
        {"file": os.path.relpath(p, REPO), "reference": r, "transcript": t, "transcript_lm": t_lm}
        for p, r, t, t_lm in zip(paths, refs, texts, texts_lm)
    ]
    for row in rows:
        log.info(
            "%s\n    ref: %s\n    hyp: %s\n    +LM: %s",
            row["file"],
            row["reference"],
            row["transcript"],
            row["transcript_lm"],
        )
    return {"seconds": seconds, "lm": arpa, "files": rows, "errors": errors}


def stage_export(workdir: str, args: argparse.Namespace) -> dict:
    """Exports the fine-tuned CTC model: our checkpoint format (with its vocabulary), then a
    transformers folder (PyTorch); checks transformers' logits against ours when torch is here."""
    import numpy as np

    from xlsr_jax import convert, pretrained
    from xlsr_jax.transcribe import Transcriber, load_inputs

    ckpt = os.path.join(os.path.dirname(workdir), "finetune_ctc", "checkpoints")
    transcriber = Transcriber(ckpt)
    loaded = transcriber.loaded
    vocab = {t: i for i, t in enumerate(transcriber.labels.tokens)}
    export_dir = pretrained.save_pretrained(
        os.path.join(workdir, "xlsr_jax"),
        loaded.params,
        loaded.config,
        loaded.architecture,
        vocab=vocab,
        audio=loaded.audio,
        overwrite=True,
    )
    hf_dir = convert.orbax_to_hf(export_dir, os.path.join(workdir, "hf"), overwrite=True)
    summary = {"xlsr_jax": export_dir, "hf": hf_dir}
    try:
        import torch
        import transformers
    except ImportError as e:
        summary["parity"] = f"skipped: {e}"
        return summary
    import data_pipelines

    clip = os.path.join(data_pipelines.DEMO_CORPUS_DIR, "es", "clips", "common_voice_es_00000.mp3")
    wave = load_inputs([clip], loaded.audio)[0][0][None, :]  # [1, samples]
    hf_model = transformers.Wav2Vec2ForCTC.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        theirs = hf_model(torch.from_numpy(wave)).logits.numpy()
    ours, _ = loaded.model().apply({"params": loaded.params}, wave, np.zeros(wave.shape, bool), deterministic=True)
    summary["parity_max_abs_logit_diff"] = float(np.max(np.abs(np.asarray(ours) - theirs)))
    return summary


def stage_lid(workdir: str, args: argparse.Namespace) -> dict:
    """Language ID (configs/finetune/demo_lid.py) from the CTC stage's encoder (else the pretrained
    one); accuracy on the test split, with the confusion matrix in test_report.json.

    Why the CTC encoder: in a few hundred updates a tiny model starting from 150 pretraining
    updates stays near chance, while one that has learned speech sounds through CTC separates
    languages quickly (its CTC head is dropped, a fresh classifier is trained).
    """
    from configs.finetune import demo_lid

    config = demo_lid.get_config(args.lid_arg)
    ctc_ckpt = os.path.join(os.path.dirname(workdir), "finetune_ctc", "checkpoints")
    if not config.init.checkpoint and os.path.isdir(ctc_ckpt):
        config.init.checkpoint = ctc_ckpt
    config.init.checkpoint = config.init.checkpoint or _pretrained_checkpoint(workdir)
    metrics, seconds, task, records = _finetune(config, workdir, "test")
    from xlsr_jax.tasks import lid

    report = lid.lid_report(records, task.languages)
    with open(os.path.join(workdir, "test_report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return {
        "steps": config.train.total_steps,
        "seconds": round(seconds, 1),
        "init": config.init.checkpoint or "random",
        "test_accuracy": round(report["accuracy"], 3),
        "chance": round(report["chance"], 3),
        "per_language": {k: round(v, 3) for k, v in report["per_language"].items()},
    }


def _translation_scores(task, params, data_cfg, split: str) -> dict[str, float]:
    """BLEU/chrF (sacrebleu) of `params` on one whole pass of `split`."""
    import math

    from xlsr_jax.tasks import finetune

    # One ordered pass (the train split would otherwise repeat forever).
    batches = math.ceil(sum(1 for _ in _split_rows(data_cfg, split)) / data_cfg.batch_size) + 1
    records = finetune.collect_eval_records(task, params, data_cfg, split, max_batches=batches)
    return task.eval_report(records, 0, None)


def _split_rows(data_cfg, split: str):
    from data_pipelines import sources

    for cfg in data_cfg.sources:
        yield from sources.make_source(cfg, split).ids


def stage_translate(workdir: str, args: argparse.Namespace) -> dict:
    """Speech translation X -> English (configs/finetune/demo_st.py) from the CTC stage's encoder
    (else the pretrained one): BLEU and chrF before and after training, on the training clips
    and on the held-out dev sentences, and a few translations of test clips.

    The corpus has 30 training sentences per language: the tiny model learns the pairs it was
    shown (train BLEU) but cannot be expected to translate unseen sentences (dev BLEU).
    """
    import data_pipelines
    from configs.finetune import demo_st
    from xlsr_jax import pretrained, tasks
    from xlsr_jax.translate import Translator

    config = demo_st.get_config(args.translate_arg)
    ctc_ckpt = os.path.join(os.path.dirname(workdir), "finetune_ctc", "checkpoints")
    if not config.init.checkpoint and os.path.isdir(ctc_ckpt):
        config.init.checkpoint = ctc_ckpt
    config.init.checkpoint = config.init.checkpoint or _pretrained_checkpoint(workdir)
    task = tasks.create_task(config)
    import flax.linen as nn
    import jax

    initial = nn.meta.unbox(task.init_params(jax.random.PRNGKey(config.train.seed), task.example_batch()))
    if config.init.checkpoint:
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(
                x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])
            ),
            initial,
        )
        initial = task.restore_init_params(config.init.checkpoint, abstract, initial)
    before = {split: _translation_scores(task, initial, config.data, split) for split in ("train", "dev")}
    start = time.perf_counter()
    from xlsr_jax import trainer

    trainer.train_and_evaluate(config, workdir)
    seconds = time.perf_counter() - start
    params = pretrained.load_pretrained(os.path.join(workdir, "checkpoints")).params
    after = {split: _translation_scores(task, params, config.data, split) for split in ("train", "dev")}
    paths = []
    for lang in config.data.languages:
        with open(os.path.join(data_pipelines.DEMO_CORPUS_DIR, lang, "test.tsv"), encoding="utf-8") as f:
            row = [line.rstrip("\n").split("\t") for line in f][1]
        paths.append(os.path.join(data_pipelines.DEMO_CORPUS_DIR, lang, "clips", row[1]))
    texts, errors = Translator(workdir)(paths)
    for path, text in zip(paths, texts):
        log.info("%s\n    translation: %s", os.path.relpath(path, REPO), text)

    def keep(m):
        return {k: round(v, 2) for k, v in m.items() if k in ("bleu", "chrf")}

    return {
        "steps": config.train.total_steps,
        "seconds": round(seconds, 1),
        "init": config.init.checkpoint or "random",
        "bleu_chrf_before": {split: keep(m) for split, m in before.items()},
        "bleu_chrf_after": {split: keep(m) for split, m in after.items()},
        "translations": [{"file": os.path.relpath(p, REPO), "translation": t} for p, t in zip(paths, texts)],
        "errors": errors,
    }


# (name, function): run in this order; later stages may read earlier stages' directories.
STAGES = [
    ("pretrain", stage_pretrain),
    ("finetune_ctc", stage_finetune_ctc),
    ("transcribe", stage_transcribe),
    ("export", stage_export),
    ("lid", stage_lid),
    ("translate", stage_translate),
]


def main(argv: list[str] | None = None) -> None:
    """Parses flags and runs the selected stages, printing a JSON summary per stage."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="output directory (one subdirectory per stage)")
    parser.add_argument(
        "--stages", default=",".join(name for name, _ in STAGES), help="comma-separated stages to run (default: all)"
    )
    parser.add_argument("--config_arg", default=None, help="argument for configs/demo.py, e.g. steps=300")
    parser.add_argument("--finetune_arg", default=None, help="argument for configs/finetune/demo_ctc.py")
    parser.add_argument("--lid_arg", default=None, help="argument for configs/finetune/demo_lid.py")
    parser.add_argument("--translate_arg", default=None, help="argument for configs/finetune/demo_st.py")
    parser.add_argument("--transcribe_per_language", type=int, default=1, help="test clips transcribed per language")
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
