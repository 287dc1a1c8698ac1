"""Checkpoints written before the task/checkpoint-layout refactor (commit 3b8a2e9) still load.

The fixture (tests/fixtures/checkpoints_3b8a2e9, see its README) was written by the old code: a
pretraining run and a language-ID run (their run configs have no `architecture` record, so it is
derived once from the task) and an exported CTC model. Every path a user has for them (the
workdir, checkpoints/, a step, a params folder, an export and its params/) loads with the right
architecture and gives the outputs the old code computed; the old pretraining run resumes with
the current trainer.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from xlsr_jax import checkpointing, pretrained
from xlsr_jax.models import Wav2Vec2Model

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "checkpoints_3b8a2e9")
EXPECTED = np.load(os.path.join(FIXTURE, "expected.npz"))

ARCHITECTURES = {
    "pretrain_run": "Wav2Vec2ForPreTraining",
    "lid_run": "Wav2Vec2ForSequenceClassification",
    "ctc_export": "Wav2Vec2ForCTC",
}
PATHS = [
    ("pretrain_run", ""),
    ("pretrain_run", "checkpoints"),
    ("pretrain_run", "checkpoints/1"),
    ("pretrain_run", "checkpoints/1/params"),
    ("lid_run", ""),
    ("lid_run", "checkpoints/1"),
    ("ctc_export", ""),
    ("ctc_export", "params"),
]


def test_old_run_configs_have_no_architecture_record():
    for run in ("pretrain_run", "lid_run"):
        assert "architecture" not in checkpointing.read_config(os.path.join(FIXTURE, run))


@pytest.mark.parametrize("name,sub", PATHS, ids=[f"{n}/{s}" if s else n for n, s in PATHS])
def test_every_path_loads_with_its_architecture_and_old_outputs(name, sub):
    loaded = pretrained.load_pretrained(os.path.join(FIXTURE, name, sub))
    assert loaded.architecture == ARCHITECTURES[name]
    kind = {"": "run", "checkpoints": "checkpoints", "checkpoints/1": "step", "checkpoints/1/params": "step"}
    assert loaded.source.kind == ("export" if name == "ctc_export" else kind[sub])
    if name != "ctc_export":
        assert loaded.source.step == 1 and loaded.run_config["task"] == name.split("_")[0]
    audio, pad = EXPECTED["audio"], np.zeros(EXPECTED["audio"].shape, bool)
    out = Wav2Vec2Model(loaded.config).apply(
        {"params": loaded.params.get("wav2vec2", loaded.params)}, audio, pad, deterministic=True
    )
    np.testing.assert_allclose(out.last_hidden_state, EXPECTED[f"{name}/last_hidden_state"], rtol=0, atol=1e-6)
    if f"{name}/logits" in EXPECTED:
        logits = loaded.model().apply({"params": loaded.params}, audio, pad, deterministic=True)
        logits = logits[0] if loaded.architecture == "Wav2Vec2ForCTC" else logits
        np.testing.assert_allclose(logits, EXPECTED[f"{name}/logits"], rtol=0, atol=1e-6)


def test_old_language_id_run_keeps_its_class_names():
    from xlsr_jax import identify

    loaded = pretrained.load_pretrained(os.path.join(FIXTURE, "lid_run"))
    assert identify.class_names(loaded) == ["es", "sw"]


def test_old_ctc_export_keeps_its_vocabulary():
    loaded = pretrained.load_pretrained(os.path.join(FIXTURE, "ctc_export"))
    assert loaded.vocab == {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "a": 5}
    assert loaded.audio == {"sampling_rate": 16000, "do_normalize": True}


@pytest.mark.slow
def test_old_pretraining_run_resumes_with_the_current_trainer(tmp_path):
    """Optimizer state, RNG, step and data position of the old checkpoint restore; one more step runs."""
    from tests.trainer_testlib import synthetic_builder, tiny_config
    from xlsr_jax import trainer

    workdir = str(tmp_path / "run")
    shutil.copytree(os.path.join(FIXTURE, "pretrain_run"), workdir)
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        old = json.load(f)
    config = tiny_config(total_steps=2)
    config.model = ml_collections.ConfigDict(old["model"])
    config.ckpt.async_save = False
    config.train.transfer_guard = "allow"
    # The old run's optimizer and schedule (part of the restored state's structure).
    for key, value in old["optim"].items():
        config.optim[key] = value
    builder = synthetic_builder(batch_size=2, num_samples=4000)
    state = trainer.train_and_evaluate(config, workdir, devices=jax.devices()[:1], input_builder=builder)
    assert int(state.step) == 2
    restored = checkpointing.read_params_numpy(os.path.join(FIXTURE, "pretrain_run"))
    resumed = checkpointing.read_params_numpy(workdir)
    changed = [
        not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(resumed), strict=True)
    ]
    assert any(changed)  # the extra step trained the restored parameters
    assert checkpointing.read_config(workdir)["architecture"] == "Wav2Vec2ForPreTraining"  # now recorded
    with open(os.path.join(workdir, "checkpoints", "2", "data", "metadata"), encoding="utf-8") as f:
        assert json.load(f)["states"] == [{"position": 2}]  # the data position continued from 1
