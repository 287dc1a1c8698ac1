"""End-to-end tests of xlsr_jax.trainer on the tiny model with synthetic, resumable input.

Each run happens in a subprocess (fixed simulated device count, a clean JAX) and all runs share
a persistent compilation cache, so the train step compiles once per device layout.
"""

import os

import numpy as np
import pytest

from tests.trainer_testlib import read_metrics, run_with_devices

PRELUDE = """
import logging, json, numpy as np, jax
logging.basicConfig(level=logging.WARNING)
from tests.trainer_testlib import tiny_config, synthetic_builder
from xlsr_jax import trainer, checkpointing
"""

pytestmark = pytest.mark.slow  # tiny-model training runs in subprocesses


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory):
    return str(tmp_path_factory.getbasetemp() / "jax_compile_cache")


def _final_params(path):
    """Parameters of a run's newest checkpoint (or of one step directory) as numpy."""
    from xlsr_jax import checkpointing

    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    return checkpointing.read_params_numpy(path)


def test_loss_falls_and_metrics_are_logged(tmp_path, jax_cache):
    workdir = str(tmp_path / "run")
    run_with_devices(
        PRELUDE
        + f"""
cfg = tiny_config(total_steps=24)
cfg.eval.every_steps = 24
cfg.eval.num_batches = 1
trainer.train_and_evaluate(cfg, {workdir!r}, devices=jax.devices()[:1], input_builder=synthetic_builder())
""",
        devices=1,
        cache_dir=jax_cache,
    )
    metrics = read_metrics(workdir)
    assert sorted(metrics) == list(range(1, 25))
    losses = np.array([metrics[s]["train/loss"] for s in range(1, 25)])
    assert np.all(np.isfinite(losses))
    assert losses[-4:].mean() < losses[:4].mean() - 0.05, losses
    last = metrics[24]
    for key in (
        "train/loss",
        "train/contrastive_loss",
        "train/diversity_loss",
        "train/accuracy",
        "train/code_perplexity",
        "train/prob_perplexity",
        "train/gumbel_temperature",
        "train/lr",
        "train/grad_norm",
        "perf/audio_sec_per_sec",
        "perf/steps_per_sec",
        "eval/loss",
        "eval/accuracy",
    ):
        assert key in last, key
    assert last["train/gumbel_temperature"] == pytest.approx(2.0 * 0.995**23, rel=1e-5)
    assert metrics[1]["train/lr"] == 0.0 and metrics[3]["train/lr"] == pytest.approx(2e-3)
    assert os.path.exists(os.path.join(workdir, "config.json"))
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "24"))  # saved at the end


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, jax_cache):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    from_ckpt = str(tmp_path / "from_checkpoint")
    out = run_with_devices(
        PRELUDE
        + f"""
cfg = tiny_config(total_steps=7)
dev = jax.devices()[:1]
trainer.train_and_evaluate(cfg, {straight!r}, devices=dev, input_builder=synthetic_builder())
# SIGTERM arrives while batch 3 is being read: that step finishes, then a checkpoint, then stop.
state = trainer.train_and_evaluate(cfg, {resumed!r}, devices=dev, input_builder=synthetic_builder(sigterm_at=3))
print("stopped_at", int(state.step))
state = trainer.train_and_evaluate(cfg, {resumed!r}, devices=dev, input_builder=synthetic_builder())
print("finished_at", int(state.step))
# Params-only initialisation (what fine-tuning does): fresh optimizer and step, given params.
cfg0 = tiny_config(total_steps=0)
cfg0.init.checkpoint = {straight!r} + "/checkpoints"
state = trainer.train_and_evaluate(cfg0, {from_ckpt!r}, devices=dev, input_builder=synthetic_builder())
want = checkpointing.read_params_numpy({straight!r} + "/checkpoints")
same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(want)))
print("init_from_checkpoint", same, int(state.step), int(state.opt_state[1][0].count))
""",
        devices=1,
        cache_dir=jax_cache,
    )
    assert "stopped_at 4" in out and "finished_at 7" in out
    assert "init_from_checkpoint True 0 0" in out
    a, b = _final_params(straight), _final_params(resumed)
    for x, y in zip(jax_leaves(a), jax_leaves(b)):
        np.testing.assert_array_equal(x, y)
    ma, mb = read_metrics(straight), read_metrics(resumed)
    # Same losses after the restart: optimizer state, RNG and data position were all restored.
    for step in (5, 6, 7):
        assert ma[step]["train/loss"] == mb[step]["train/loss"]


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_nan_batch_is_skipped_and_persistent_nans_stop_the_run(tmp_path, jax_cache):
    skip, stop = str(tmp_path / "skip"), str(tmp_path / "stop")
    out = run_with_devices(
        PRELUDE
        + f"""
dev = jax.devices()[:1]
cfg = tiny_config(total_steps=5)
cfg.ckpt.every_steps = 1
cfg.ckpt.keep = 10
trainer.train_and_evaluate(cfg, {skip!r}, devices=dev, input_builder=synthetic_builder(nan_at=(2,)))
cfg.train.max_consecutive_bad_steps = 3
try:
    trainer.train_and_evaluate(cfg, {stop!r}, devices=dev,
                               input_builder=synthetic_builder(nan_at=tuple(range(2, 100))))
except trainer.NonFiniteTrainingError as e:
    print("STOPPED:", e)
""",
        devices=1,
        cache_dir=jax_cache,
    )
    metrics = read_metrics(skip)
    assert np.isnan(metrics[3]["train/loss"])  # batch position 2 is step 3
    assert metrics[2]["train/skipped_steps"] == 0 and metrics[5]["train/skipped_steps"] == 1
    assert np.isfinite(metrics[4]["train/loss"]) and np.isfinite(metrics[5]["train/loss"])
    step2 = _final_params(os.path.join(skip, "checkpoints", "2"))
    step3 = _final_params(os.path.join(skip, "checkpoints", "3"))
    step4 = _final_params(os.path.join(skip, "checkpoints", "4"))
    for x, y, z in zip(jax_leaves(step2), jax_leaves(step3), jax_leaves(step4)):
        assert np.all(np.isfinite(z))
        np.testing.assert_array_equal(x, y)  # the NaN step changed nothing
    assert any(not np.array_equal(x, z) for x, z in zip(jax_leaves(step2), jax_leaves(step4)))

    assert "STOPPED: 3 consecutive steps" in out
    steps = sorted(int(s) for s in os.listdir(os.path.join(stop, "checkpoints")) if s.isdigit())
    assert steps and max(steps) < 5  # no checkpoint written once the limit was reached
    last = _final_params(os.path.join(stop, "checkpoints", str(max(steps))))
    for x, y in zip(jax_leaves(last), jax_leaves(step2)):
        np.testing.assert_array_equal(x, y)  # the last checkpoint holds the last good params


def test_eight_devices_match_one_and_checkpoint_moves_to_one_device(tmp_path, jax_cache):
    one, eight = str(tmp_path / "one"), str(tmp_path / "eight")
    out = run_with_devices(
        PRELUDE
        + f"""
from xlsr_jax import sharding
cfg = tiny_config(total_steps=4)
trainer.train_and_evaluate(cfg, {one!r}, devices=jax.devices()[:1], input_builder=synthetic_builder())
cfg8 = tiny_config(total_steps=4)
cfg8.mesh.data, cfg8.mesh.fsdp = 2, 4
state = trainer.train_and_evaluate(cfg8, {eight!r}, input_builder=synthetic_builder())
kernel = state.params["wav2vec2"]["encoder"]["layers_0"]["feed_forward"]["intermediate_dense"]["kernel"]
print("kernel_spec", repr(kernel.sharding.spec), len(kernel.sharding.device_set))
# The 8-device checkpoint resumes on one device and keeps training.
cfg.train.total_steps = 6
state = trainer.train_and_evaluate(cfg, {eight!r}, devices=jax.devices()[:1], input_builder=synthetic_builder())
print("resumed_to", int(state.step), len(state.params["project_q"]["kernel"].sharding.device_set))
""",
        devices=8,
        cache_dir=jax_cache,
    )
    # The feed-forward kernel [embed, mlp] is split over fsdp on all 8 devices.
    assert "kernel_spec P('fsdp', 'tensor') 8" in out, out
    assert "resumed_to 6 1" in out
    m1, m8 = read_metrics(one), read_metrics(eight)
    for step in range(1, 5):
        for key in ("train/loss", "train/grad_norm", "train/accuracy"):
            assert m8[step][key] == pytest.approx(m1[step][key], rel=2e-4, abs=1e-5), (step, key)
