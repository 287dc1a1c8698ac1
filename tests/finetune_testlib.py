"""Shared fine-tuning runs for tests/tasks/test_finetune.py and tests/test_transcribe.py.

Each run trains once per test session: its results are kept under pytest's session base temp
directory, and a module that asks again loads them from there instead of training again.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

# CTC: one language of the shipped corpus (its own ~30-character vocabulary), clips up to 3 s in
# one length bucket, so each program compiles once.
CTC_LANGUAGES = ("es",)
CTC_STEPS = 300
CTC_FREEZE = 30  # Transformer frozen for these updates (fairseq freeze_finetune_updates)
# LID: three languages of different scripts and sounds; 2 s crops, one bucket.
LID_LANGUAGES = ("ar", "es", "zh-CN")
LID_STEPS = 150


def _quiet_training_config(config, steps: int, every: int):
    config.train.progress_bar = False
    config.train.log_every = every
    config.ckpt.every_steps = every
    config.ckpt.keep = 100
    config.ckpt.async_save = False
    config.eval.every_steps = steps  # one trainer evaluation, at the end (the TensorBoard/JSON path)
    return config


def _load_or_run(base: str, name: str, run):
    workdir = os.path.join(base, name)
    done = os.path.join(workdir, "done.json")
    if not os.path.exists(done):
        summary = run(workdir)
        with open(done, "w", encoding="utf-8") as f:
            json.dump(summary, f)
    with open(done, encoding="utf-8") as f:
        return json.load(f)


def _params(workdir: str, step: int):
    from xlsr_jax import checkpointing

    return checkpointing.read_params_numpy(os.path.join(workdir, "checkpoints", str(step)))


def initial_params(task, config):
    """The parameters the trainer starts from (same seed split as trainer.train_and_evaluate)."""
    import flax.linen as nn

    params_rng, _ = jax.random.split(jax.random.PRNGKey(config.train.seed))
    return jax.device_get(nn.unbox(task.init_params(params_rng, task.example_batch())))


def _cer(task, params, config) -> dict[str, float]:
    from xlsr_jax.tasks import ctc, finetune

    records = finetune.collect_eval_records(task, params, config.data, "test")
    report = ctc.ctc_report(records, task.vocabulary, task.languages)
    return {k: v.cer for k, v in report["counts"].items()}


def ctc_config(steps: int = CTC_STEPS):
    """The demo CTC config shrunk to one language and one 3 s bucket."""
    from configs.finetune import demo_ctc

    config = demo_ctc.get_config(f"langs={'+'.join(CTC_LANGUAGES)},steps={steps},batch=8,lr=5e-3")
    config.data.bucket_boundaries = [48000]
    config.data.max_sample_size = 48000
    config.finetune.freeze_finetune_updates = CTC_FREEZE
    # A short run from a random stand-in "pretrained" model must first leave CTC's all-blank
    # plateau: no masking or LayerDrop (they slow that down), and a long hold at the peak lr.
    config.model.mask_time_prob = 0.0
    config.model.mask_feature_prob = 0.0
    config.model.layerdrop = 0.0
    config.optim.phase_ratio = (0.1, 0.7, 0.2)
    return _quiet_training_config(config, steps, CTC_FREEZE)


def _run_ctc(workdir: str) -> dict:
    import flax.linen as nn
    import jax.numpy as jnp

    from tests.trainer_testlib import read_metrics
    from xlsr_jax import pretrained, tasks, trainer
    from xlsr_jax.models import Wav2Vec2Config, Wav2Vec2ForPreTraining

    config = ctc_config()
    # A stand-in pretrained model: a tiny Wav2Vec2ForPreTraining, exported as a converter would.
    model_cfg = Wav2Vec2Config.from_dict(config.model.to_dict())
    rngs = {k: jax.random.PRNGKey(i) for i, k in enumerate(("params", "mask", "gumbel", "dropout"))}
    pre = nn.unbox(Wav2Vec2ForPreTraining(model_cfg).init(rngs, jnp.zeros((1, 16000)), None)["params"])
    config.init.checkpoint = pretrained.save_pretrained(
        os.path.join(workdir, "pretrained"), jax.device_get(pre), model_cfg, "Wav2Vec2ForPreTraining"
    )
    trainer.train_and_evaluate(config, workdir)

    task = tasks.create_task(config)
    start = initial_params(task, config)
    start["wav2vec2"] = jax.device_get(pre["wav2vec2"])  # what restore_init_params loads
    final = _params(workdir, CTC_STEPS)
    metrics = read_metrics(workdir)
    return {
        "cer_before": _cer(task, start, config),
        "cer_after": _cer(task, final, config),
        "metrics": {str(k): v for k, v in metrics.items()},
    }


def _run_lid(workdir: str, init_checkpoint: str) -> dict:
    from configs.finetune import demo_lid
    from tests.trainer_testlib import read_metrics
    from xlsr_jax import tasks, trainer
    from xlsr_jax.tasks import finetune, lid

    config = demo_lid.get_config(f"langs={'+'.join(LID_LANGUAGES)},steps={LID_STEPS},batch=8,lr=3e-3")
    config.data.bucket_boundaries = [32000]
    config.data.max_sample_size = 32000  # random 2 s crops of longer clips
    config.model.mask_time_prob = 0.0  # a short run: no masking or LayerDrop (as the CTC run)
    config.model.mask_feature_prob = 0.0
    config.model.layerdrop = 0.0
    config.optim.phase_ratio = (0.1, 0.7, 0.2)
    config = _quiet_training_config(config, LID_STEPS, LID_STEPS)
    # From the CTC run's encoder: a randomly initialised tiny model stays near chance for hundreds
    # of updates, while one that has learned speech sounds separates languages quickly. This is
    # also the path of fine-tuning from an already fine-tuned checkpoint (its CTC head is dropped).
    config.init.checkpoint = init_checkpoint
    trainer.train_and_evaluate(config, workdir)
    task = tasks.create_task(config)
    records = finetune.collect_eval_records(task, _params(workdir, LID_STEPS), config.data, "test")
    return {
        "report": lid.lid_report(records, task.languages),
        "metrics": {str(k): v for k, v in read_metrics(workdir).items()},
    }


@pytest.fixture(scope="module")
def ctc_run(tmp_path_factory):
    """A CTC fine-tuning run (from a stand-in pretrained export) and its before/after CER."""
    base = str(tmp_path_factory.getbasetemp())
    summary = _load_or_run(base, "ctc_run", _run_ctc)
    workdir = os.path.join(base, "ctc_run")
    from xlsr_jax import pretrained, tasks

    pre = pretrained.load_pretrained(os.path.join(workdir, "pretrained")).params
    config = ctc_config()
    fresh_head = initial_params(tasks.create_task(config), config)["lm_head"]
    return {
        **summary,
        "metrics": {int(k): v for k, v in summary["metrics"].items()},
        "workdir": workdir,
        "checkpoints": os.path.join(workdir, "checkpoints"),
        "steps": CTC_STEPS,
        "freeze": CTC_FREEZE,
        "languages": list(CTC_LANGUAGES),
        "pretrained": pre,
        "fresh_head": fresh_head,
        "params_at": {s: _params(workdir, s) for s in (CTC_FREEZE, CTC_STEPS)},
        "final_params": _params(workdir, CTC_STEPS),
    }


@pytest.fixture(scope="module")
def lid_run(tmp_path_factory, ctc_run):
    """A language-ID run (initialised from the CTC run) and its accuracy on the test split."""
    base = str(tmp_path_factory.getbasetemp())
    summary = _load_or_run(base, "lid_run", lambda workdir: _run_lid(workdir, ctc_run["checkpoints"]))
    workdir = os.path.join(base, "lid_run")
    return {
        **summary,
        "metrics": {int(k): v for k, v in summary["metrics"].items()},
        "workdir": workdir,
        "checkpoints": os.path.join(workdir, "checkpoints"),
        "steps": LID_STEPS,
        "languages": list(LID_LANGUAGES),
        "final_params": _params(workdir, LID_STEPS),
    }


def write_formats(src: str, out_dir: str) -> dict[str, str]:
    """The clip `src` as wav (16 kHz), flac, 22.05 kHz wav and a copy of the mp3."""
    import shutil

    import librosa
    import soundfile as sf

    from data_pipelines import load_audio

    wave = load_audio(src, sampling_rate=16000)
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "wav": os.path.join(out_dir, "clip.wav"),
        "flac": os.path.join(out_dir, "clip.flac"),
        "wav22k": os.path.join(out_dir, "clip_22k.wav"),
        "mp3": os.path.join(out_dir, "clip.mp3"),
    }
    sf.write(paths["wav"], wave, 16000, subtype="FLOAT")
    sf.write(paths["flac"], wave, 16000, subtype="PCM_24")
    sf.write(paths["wav22k"], librosa.resample(np.asarray(wave), orig_sr=16000, target_sr=22050), 22050)
    shutil.copy(src, paths["mp3"])
    return paths
