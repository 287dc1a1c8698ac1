"""Tests for xlsr_jax.schedules and the optimizer/config plumbing (NumPy references)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from xlsr_jax import optimizers, schedules


def _reference_polynomial(step, peak, warmup, total, end=0.0, power=1.0):
    # fairseq PolynomialDecayLRSchedule.step_update, written out in NumPy.
    if warmup > 0 and step <= warmup:
        return peak * step / warmup
    if step >= total:
        return end
    remaining = 1 - (step - warmup) / (total - warmup)
    return (peak - end) * remaining**power + end


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_polynomial_decay_matches_fairseq(power):
    sched = jax.jit(schedules.polynomial_decay(5e-4, 100, 1000, end_lr=1e-5, power=power))
    for step in [0, 1, 50, 99, 100, 101, 500, 999, 1000, 5000]:
        want = _reference_polynomial(step, 5e-4, 100, 1000, 1e-5, power)
        assert float(sched(step)) == pytest.approx(want, rel=1e-5, abs=1e-12), step


def test_tri_stage_stages():
    sched = schedules.tri_stage(1e-4, 1000, (0.1, 0.4, 0.5), init_lr_scale=0.01, final_lr_scale=0.05)
    assert float(sched(0)) == pytest.approx(1e-6)
    assert float(sched(50)) == pytest.approx(1e-6 + (1e-4 - 1e-6) * 0.5)
    assert float(sched(100)) == pytest.approx(1e-4)
    assert float(sched(499)) == pytest.approx(1e-4)
    # Exponential decay: halfway through the decay stage lr = peak * sqrt(final_scale).
    assert float(sched(750)) == pytest.approx(1e-4 * np.sqrt(0.05), rel=1e-4)
    assert float(sched(1000)) == pytest.approx(5e-6, rel=1e-4)
    assert float(sched(10**6)) == pytest.approx(5e-6, rel=1e-4)
    with pytest.raises(ValueError):
        schedules.tri_stage(1e-4, 1000, (0.5, 0.5, 0.5))


def test_gumbel_temperature_matches_max_formula():
    sched = schedules.gumbel_temperature(2.0, 0.5, 0.999995)
    for step in [0, 1, 1000, 100_000, 277_000, 1_000_000]:
        want = max(2.0 * 0.999995**step, 0.5)
        assert float(sched(jnp.asarray(step))) == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError):
        schedules.gumbel_temperature(2.0, 0.5, 1.5)


def test_schedule_by_name_and_errors():
    cfg = ml_collections.ConfigDict({"schedule": "polynomial_decay", "lr": 1.0, "warmup_steps": 2, "total_steps": 4})
    assert float(schedules.create_learning_rate_schedule(cfg)(1)) == pytest.approx(0.5)
    cfg.schedule = "constant"
    assert float(schedules.create_learning_rate_schedule(cfg)(7)) == 1.0
    cfg.schedule = "cosine"
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        schedules.create_learning_rate_schedule(cfg)
    with pytest.raises(ValueError, match="must exceed"):
        schedules.polynomial_decay(1.0, 10, 10)


def test_optimizer_is_clipped_adamw_with_decoupled_decay():
    optim = ml_collections.ConfigDict(
        {
            "name": "adamw",
            "lr": 0.1,
            "b1": 0.9,
            "b2": 0.98,
            "eps": 1e-6,
            "weight_decay": 0.01,
            "clip_grad_norm": 1.0,
            "schedule": "constant",
        }
    )
    tx, _ = optimizers.create_optimizer(optim)
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([30.0, 40.0])}  # norm 50 -> clipped to norm 1: (0.6, 0.8)
    updates, _ = tx.update(grads, tx.init(params), params)
    # First Adam step: m/(sqrt(v)+eps) = g/|g| elementwise (bias-corrected) = sign(g).
    g = np.array([0.6, 0.8])
    adam = g / (np.abs(g) + 1e-6)
    want = -0.1 * (adam + 0.01 * np.array([1.0, -2.0]))
    np.testing.assert_allclose(updates["w"], want, rtol=1e-5)
    optim.name = "sgd"
    with pytest.raises(ValueError, match="only 'adamw'"):
        optimizers.create_optimizer(optim)


def test_recipe_configs_load_and_tie_total_steps():
    from configs import (
        common,
        demo,
        pretrain_base,
        xls_r,
        xlsr_53,
    )

    recipes = [(pretrain_base, None, 5e-4), (xlsr_53, None, 1e-3), (xls_r, None, 5e-3)]
    recipes += [(xls_r, "size=300m", 5e-3), (xls_r, "size=1b", 3e-4), (xls_r, "size=2b", 3e-4)]
    for module, arg, lr in recipes:
        config = module.get_config(arg)
        assert config.optim.lr == lr
        assert config.optim.total_steps == config.train.total_steps
        assert set(config.keys()) >= {
            "task",
            "model",
            "data",
            "train",
            "optim",
            "mesh",
            "sharding",
            "ckpt",
            "eval",
            "init",
        }
        config.train.total_steps = 123  # one FieldReference: the decay end follows
        assert config.optim.total_steps == 123
    assert xls_r.get_config("size=2b").mesh.fsdp == -1 and xls_r.get_config().mesh.fsdp == 1
    assert xls_r.get_config("size=1b").model.num_hidden_layers == 48
    with pytest.raises(ValueError, match="unknown XLS-R size"):
        xls_r.get_config("size=3b")
    small = pretrain_base.get_config("runlocal")
    assert small.train.total_steps == 20 and small.optim.total_steps == 20
    assert demo.get_config("steps=30").optim.warmup_steps == 3
    with pytest.raises(ValueError, match="unknown config argument"):
        common.parse_arg("runlokal", runlocal=False)
