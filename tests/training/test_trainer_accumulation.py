"""Gradient accumulation and the task interface, on a linear-regression task (compiles in seconds).

A task whose loss is a plain mean makes accumulation exactly checkable: the mean of equal-size
microbatch means is the full-batch mean, so 1 x B and 4 x B/4 must give the same parameters.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from xlsr_jax import sharding, tasks, trainer


class LinearRegressionTask(tasks.Task):
    """y = x @ w + b with squared error; parameters carry logical axes like the real models."""

    name = "linear_regression"
    data_task = "regression"

    def __init__(self, config):
        self.features = config.model.features

    def example_batch(self):
        return {"x": np.zeros((1, self.features), np.float32), "y": np.zeros((1,), np.float32)}

    def init_params(self, rng, batch):
        dense = nn.Dense(
            1, kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.1), (sharding.EMBED, None))
        )
        return dense.init(rng, jnp.asarray(batch["x"]))["params"]

    def _loss(self, params, batch):
        pred = nn.Dense(1).apply({"params": nn.unbox(params)}, batch["x"])[:, 0]  # [B]
        return jnp.mean((pred - batch["y"]) ** 2)

    def loss(self, params, batch, rng, num_updates):
        loss = self._loss(params, batch)
        return loss, {"mse": loss}

    def eval_metrics(self, params, batch, rng):
        return {"mse": self._loss(params, batch)}


class RegressionData:
    """Deterministic, resumable (x, y) batches with y = x @ w_true + noise."""

    def __init__(self, batch_size, features, seed):
        self.batch_size, self.features, self.seed, self.position = batch_size, features, seed, 0

    def __iter__(self):
        return self

    def __next__(self):
        rng = np.random.default_rng([self.seed, self.position])
        self.position += 1
        x = rng.standard_normal((self.batch_size, self.features)).astype(np.float32)
        y = x @ np.arange(1, self.features + 1, dtype=np.float32) * 0.1 + 0.01 * rng.standard_normal(self.batch_size)
        return {"x": x, "y": y.astype(np.float32)}

    def get_state(self):
        return {"position": self.position}

    def set_state(self, state):
        self.position = state["position"]


def _builder(data_cfg, *, split, task, process_index, process_count):
    return RegressionData(data_cfg.batch_size // process_count, data_cfg.features, 0 if split == "train" else 1)


@pytest.fixture(autouse=True)
def _linear_regression_task(monkeypatch):
    """A task outside the package: one more line in the table, for this module's tests only."""
    monkeypatch.setitem(tasks.TASKS, LinearRegressionTask.name, LinearRegressionTask)


def _config(accum_steps: int):
    config = common.pretraining_config(
        model={"features": 8},
        data=ml_collections.ConfigDict({"batch_size": 16, "features": 8}),
        total_steps=6,
        lr=0.05,
        warmup_steps=1,
        gumbel_temperature=(2.0, 0.5, 0.99),
        clip_grad_norm=1.0,
    )
    config.task = "linear_regression"
    config.train.grad_accum_steps = accum_steps
    config.train.log_every = 1
    config.train.progress_bar = False
    config.train.transfer_guard = "disallow"
    config.eval.every_steps = 6
    config.eval.num_batches = 2
    return config


def test_accumulated_microbatches_equal_the_full_batch(tmp_path):
    devices = jax.devices()[:1]
    full = trainer.train_and_evaluate(_config(1), str(tmp_path / "full"), devices=devices, input_builder=_builder)
    accum = trainer.train_and_evaluate(_config(4), str(tmp_path / "accum"), devices=devices, input_builder=_builder)
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(accum.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # It learned, and the logged losses agree between the two runs.
    from tests.trainer_testlib import read_metrics

    m_full, m_accum = read_metrics(str(tmp_path / "full")), read_metrics(str(tmp_path / "accum"))
    assert m_full[6]["train/loss"] < 0.85 * m_full[1]["train/loss"]
    for step in range(1, 7):
        assert m_accum[step]["train/loss"] == pytest.approx(m_full[step]["train/loss"], rel=1e-5)
    assert m_full[6]["eval/mse"] == pytest.approx(m_accum[6]["eval/mse"], rel=1e-5)


def test_indivisible_accumulation_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not divisible by grad_accum_steps=3"):
        trainer.train_and_evaluate(_config(3), str(tmp_path / "bad"), devices=jax.devices()[:1], input_builder=_builder)
