"""The optimizer of every task: AdamW with gradient clipping, the schedule, and optional freezing.

fairseq's `adam` applies decoupled weight decay to every parameter, which is `optax.adamw` with
no mask; clipping happens on the raw gradient before Adam, as fairseq's `clip_norm`.

Fine-tuning (fairseq `examples/wav2vec/config/finetuning/*.yaml`, used unchanged by the XLS-R
paper) freezes two things:

* the convolutional feature encoder for the whole run (`feature_grad_mult: 0.0`: fairseq runs it
  under `torch.no_grad()`, so it gets neither gradients nor Adam updates);
* the rest of the pretrained model for the first `freeze_finetune_updates` updates (fairseq runs
  the whole encoder under `no_grad` until then: only the new head learns).

Both are exact here: frozen parameters get a zero gradient (`stop_encoder_gradient`, so they stay
out of the clipped global norm, as in fairseq) and an optimizer branch that returns zero updates
and leaves its own state untouched, so they stay bit-identical, weight decay included. When the
Transformer thaws its Adam state starts fresh (bias correction from 1, as fairseq's per-parameter
`step`), and its learning rate follows the same global schedule as the head's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from xlsr_jax import schedules

PyTree = Any

# Optimizer groups (labels of `optax.multi_transform`).
FROZEN = "frozen"  # never updated (the feature encoder when feature_grad_mult == 0)
ENCODER = "encoder"  # the pretrained model: frozen for the first freeze_finetune_updates
HEAD = "head"  # the new task head: trained from the first update

ENCODER_PREFIX = "wav2vec2"  # flax name of the pretrained Wav2Vec2Model inside every head model
FEATURE_ENCODER = "feature_extractor"


def _dict_keys(path) -> tuple[str, ...]:
    """The string keys of a pytree path, ignoring flax boxes' `.value` attribute."""
    return tuple(str(p.key) for p in path if isinstance(p, jax.tree_util.DictKey))


def parameter_groups(params: PyTree, freeze_feature_encoder: bool) -> PyTree:
    """FROZEN / ENCODER / HEAD label per parameter (works on boxed and plain trees).

    A boxed parameter (flax `LogicallyPartitioned`) gets one label for the whole box, so the
    optimizer state's unused slots (optax `MaskedNode`) sit outside any box and the trainer's
    sharding derivation sees no box without an array in it.
    """
    import flax.linen as nn

    def label(path, _):
        keys = _dict_keys(path)
        if keys[:1] != (ENCODER_PREFIX,):
            return HEAD
        if freeze_feature_encoder and keys[1:2] == (FEATURE_ENCODER,):
            return FROZEN
        return ENCODER

    return jax.tree_util.tree_map_with_path(label, params, is_leaf=lambda x: isinstance(x, nn.Partitioned))


class FreezeState(NamedTuple):
    """State of `frozen_for`: updates seen and the wrapped transformation's state."""

    count: jax.Array  # int32 scalar
    inner: optax.OptState


def frozen_for(inner: optax.GradientTransformation, num_updates: int) -> optax.GradientTransformation:
    """`inner`, but returning zero updates and keeping its state unchanged for `num_updates` calls.

    The inner transformation still runs (static shapes; its cost is small next to the model)
    and its results are discarded with `jnp.where`, so frozen parameters stay bit-identical.
    """

    def init_fn(params):
        return FreezeState(jnp.zeros((), jnp.int32), inner.init(params))

    def update_fn(updates, state, params=None):
        new_updates, new_inner = inner.update(updates, state.inner, params)
        frozen = state.count < num_updates
        new_updates = jax.tree.map(lambda u: jnp.where(frozen, jnp.zeros_like(u), u), new_updates)
        new_inner = jax.tree.map(lambda n, o: jnp.where(frozen, o, n), new_inner, state.inner)
        return new_updates, FreezeState(optax.safe_int32_increment(state.count), new_inner)

    return optax.GradientTransformation(init_fn, update_fn)


def _adamw(optim_cfg: ml_collections.ConfigDict, lr: Callable) -> optax.GradientTransformation:
    return optax.adamw(lr, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps, weight_decay=optim_cfg.weight_decay)


def create_optimizer(
    optim_cfg: ml_collections.ConfigDict, *, freeze_feature_encoder: bool = False, freeze_updates: int | None = None
) -> tuple[optax.GradientTransformation, Callable]:
    """AdamW with global-norm clipping and the configured schedule; optionally the fine-tuning freezes.

    Args:
      optim_cfg: the config's `optim` section (name "adamw", lr, schedule fields, b1, b2, eps,
        weight_decay, clip_grad_norm).
      freeze_feature_encoder: never update `wav2vec2/feature_extractor` (fine-tuning).
      freeze_updates: None for one AdamW over all parameters (pretraining); else the updates during
        which the rest of `wav2vec2/` is frozen (fairseq `freeze_finetune_updates`, 0 = none), with
        the parameters split into FROZEN / ENCODER / HEAD groups.
    Returns:
      (transformation, learning-rate schedule as a function of the update count).
    Raises:
      ValueError: `optim_cfg.name` is not "adamw".
    """
    if optim_cfg.name != "adamw":
        raise ValueError(f"unknown optimizer {optim_cfg.name!r} (only 'adamw' is implemented)")
    lr = schedules.create_learning_rate_schedule(optim_cfg)
    if freeze_updates is None and not freeze_feature_encoder:
        update = _adamw(optim_cfg, lr)
    else:
        freeze_updates = freeze_updates or 0
        encoder = _adamw(optim_cfg, lr)
        if freeze_updates > 0:
            # The encoder's Adam (and its schedule counter) starts only when it thaws; shifting the
            # schedule keeps its learning rate on the global schedule, as fairseq's single scheduler.
            encoder = frozen_for(_adamw(optim_cfg, lambda count: lr(count + freeze_updates)), freeze_updates)
        update = optax.multi_transform(
            {FROZEN: optax.set_to_zero(), ENCODER: encoder, HEAD: _adamw(optim_cfg, lr)},
            lambda params: parameter_groups(params, freeze_feature_encoder),
        )
    parts = []
    if optim_cfg.clip_grad_norm > 0:
        parts.append(optax.clip_by_global_norm(optim_cfg.clip_grad_norm))
    parts.append(update)
    return optax.chain(*parts), lr


def stop_encoder_gradient(params: PyTree, frozen: jax.Array) -> PyTree:
    """Zero gradient into `wav2vec2/` while `frozen` (a traced bool) holds.

    `where(frozen, stop_gradient(p), p)` has the value p and the gradient `where(frozen, 0, g)`:
    the frozen encoder then stays out of the clipped global norm, as under fairseq's `no_grad`.
    """
    encoder = jax.tree.map(lambda p: jnp.where(frozen, jax.lax.stop_gradient(p), p), params[ENCODER_PREFIX])
    return {**params, ENCODER_PREFIX: encoder}
