"""Step-indexed schedules: learning rate (pretraining and fine-tuning) and Gumbel temperature.

Every schedule is a pure function of the update count so it can live inside the jitted train
step and resume exactly from a checkpoint. Shapes follow fairseq's schedulers:

* `polynomial_decay` (fairseq `polynomial_decay`, used by every wav2vec 2.0 / XLSR / XLS-R
  pretraining recipe): linear warmup from 0 to the peak, then
  ``(peak - end) * (1 - t)**power + end`` over the remaining updates (power 1 = linear).
* `tri_stage` (fairseq `tri_stage`, used for CTC fine-tuning): linear warmup from
  ``init_scale * peak``, hold at the peak, exponential decay to ``final_scale * peak``.
* `gumbel_temperature`: ``max(t_max * decay**step, t_min)`` (fairseq `latent_temp`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

Schedule = Callable[[Any], Any]  # step (int or int array) -> float32 value


def polynomial_decay(
    peak_lr: float, warmup_steps: int, total_steps: int, end_lr: float = 0.0, power: float = 1.0
) -> Schedule:
    """Linear warmup to `peak_lr`, then polynomial decay to `end_lr` at `total_steps`.

    Args:
      peak_lr: learning rate reached at the end of warmup.
      warmup_steps: updates of linear warmup from 0 (0 starts at the peak).
      total_steps: update at which the decay reaches `end_lr`; held there afterwards.
      end_lr: final learning rate.
      power: decay exponent (1.0 = linear decay).
    Returns:
      A function step -> float32 learning rate, usable inside jit.
    """
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm = peak_lr * step / max(warmup_steps, 1)
        frac_left = jnp.clip(1.0 - (step - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
        decay = (peak_lr - end_lr) * frac_left**power + end_lr
        return jnp.where(step < warmup_steps, warm, decay).astype(jnp.float32)

    return schedule


def tri_stage(
    peak_lr: float,
    total_steps: int,
    phase_ratio: tuple[float, float, float] = (0.1, 0.4, 0.5),
    init_lr_scale: float = 0.01,
    final_lr_scale: float = 0.05,
) -> Schedule:
    """Warmup / hold / exponential decay (fairseq `tri_stage`), the CTC fine-tuning schedule.

    Args:
      peak_lr: learning rate held during the second stage.
      total_steps: total updates; the stages split it by `phase_ratio`.
      phase_ratio: fractions of `total_steps` for warmup, hold and decay (sum <= 1).
      init_lr_scale: warmup starts at `init_lr_scale * peak_lr`.
      final_lr_scale: decay ends (and stays) at `final_lr_scale * peak_lr`.
    Returns:
      A function step -> float32 learning rate, usable inside jit.
    """
    if sum(phase_ratio) > 1.0 + 1e-6:
        raise ValueError(f"phase_ratio {phase_ratio} sums to more than 1")
    warmup, hold, decay = (int(r * total_steps) for r in phase_ratio)
    init_lr, final_lr = init_lr_scale * peak_lr, final_lr_scale * peak_lr
    decay_factor = -np.log(final_lr_scale) / max(decay, 1)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm = init_lr + (peak_lr - init_lr) * step / max(warmup, 1)
        since_decay = step - warmup - hold
        dec = peak_lr * jnp.exp(-decay_factor * since_decay)
        lr = jnp.where(step < warmup, warm, peak_lr)
        lr = jnp.where(since_decay >= 0, dec, lr)
        lr = jnp.where(since_decay >= decay, final_lr, lr)
        return lr.astype(jnp.float32)

    return schedule


def constant(value: float) -> Schedule:
    """A constant schedule (useful for tests and fixed-temperature runs)."""

    def schedule(step):
        return jnp.full((), value, jnp.float32) + 0.0 * jnp.asarray(step, jnp.float32)

    return schedule


def gumbel_temperature(max_temp: float, min_temp: float, decay: float) -> Schedule:
    """Gumbel-softmax temperature ``max(max_temp * decay**step, min_temp)`` (fairseq latent_temp).

    Args:
      max_temp, min_temp, decay: fairseq's `latent_temp` triple, e.g. (2.0, 0.5, 0.999995).
    Returns:
      A function step -> float32 temperature, usable inside jit.
    """
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay must be in (0, 1], got {decay}")

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        # exp/log form keeps float32 accurate for step ~ 1e6 (decay**step underflows gracefully).
        return jnp.maximum(max_temp * jnp.exp(step * np.log(decay)), min_temp).astype(jnp.float32)

    return schedule


def create_learning_rate_schedule(optim_cfg: Any) -> Schedule:
    """Builds the learning-rate schedule named by `optim_cfg.schedule`.

    Args:
      optim_cfg: the config's `optim` section: `schedule` ("polynomial_decay" | "tri_stage" |
        "constant"), `lr`, `total_steps`, and the fields of the chosen schedule
        (`warmup_steps`, `end_lr`, `power`; or `phase_ratio`, `init_lr_scale`, `final_lr_scale`).
    Returns:
      A function step -> float32 learning rate.
    """
    name = optim_cfg.schedule
    if name == "polynomial_decay":
        return polynomial_decay(
            optim_cfg.lr,
            optim_cfg.warmup_steps,
            optim_cfg.total_steps,
            end_lr=optim_cfg.get("end_lr", 0.0),
            power=optim_cfg.get("power", 1.0),
        )
    if name == "tri_stage":
        return tri_stage(
            optim_cfg.lr,
            optim_cfg.total_steps,
            tuple(optim_cfg.phase_ratio),
            init_lr_scale=optim_cfg.init_lr_scale,
            final_lr_scale=optim_cfg.final_lr_scale,
        )
    if name == "constant":
        return constant(optim_cfg.lr)
    raise ValueError(f"unknown learning-rate schedule {name!r} (expected polynomial_decay, tri_stage or constant)")
