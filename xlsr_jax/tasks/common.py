"""What every fine-tuning task shares: frozen parameters, the optimizer, init from a checkpoint.

The published recipe (fairseq `examples/wav2vec/config/finetuning/*.yaml`, used unchanged by the
XLS-R paper) freezes two things:

* the convolutional feature encoder for the whole run (`feature_grad_mult: 0.0`: fairseq runs it
  under `torch.no_grad()`, so it gets neither gradients nor Adam updates);
* the rest of the pretrained model for the first `freeze_finetune_updates` updates (fairseq runs
  the whole encoder under `no_grad` until then: only the new head learns).

Here both are exact: frozen parameters get a zero gradient (so they stay out of the clipped
global norm, as in fairseq) and an optimizer branch that returns zero updates and leaves its own
state untouched, so they stay bit-identical, weight decay included. When the Transformer thaws
its Adam state starts fresh (bias correction from 1, as fairseq's per-parameter `step`), and its
learning rate follows the same global schedule as the head's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from xlsr_jax import schedules

log = logging.getLogger("xlsr_jax.tasks")

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


def _adam(optim_cfg: ml_collections.ConfigDict, lr: Callable) -> optax.GradientTransformation:
    return optax.adamw(lr, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps, weight_decay=optim_cfg.weight_decay)


def finetune_optimizer(
    optim_cfg: ml_collections.ConfigDict, *, freeze_feature_encoder: bool, freeze_updates: int
) -> tuple[optax.GradientTransformation, Callable]:
    """Adam with the fine-tuning freezes (module docstring), gradient clipping and the schedule.

    Args:
      optim_cfg: the config's `optim` section (name "adamw", lr, schedule fields, b1, b2, eps,
        weight_decay, clip_grad_norm).
      freeze_feature_encoder: never update `wav2vec2/feature_extractor`.
      freeze_updates: updates during which the rest of `wav2vec2/` is frozen (fairseq
        `freeze_finetune_updates`).
    Returns:
      (transformation, learning-rate schedule of the update count).
    """
    if optim_cfg.name != "adamw":
        raise ValueError(f"unknown optimizer {optim_cfg.name!r} (only 'adamw' is implemented)")
    lr = schedules.create_learning_rate_schedule(optim_cfg)
    encoder = _adam(optim_cfg, lr)
    if freeze_updates > 0:
        # The encoder's Adam (and its schedule counter) starts only when it thaws; shifting the
        # schedule keeps its learning rate on the global schedule, as fairseq's single scheduler.
        encoder = frozen_for(_adam(optim_cfg, lambda count: lr(count + freeze_updates)), freeze_updates)
    groups = optax.multi_transform(
        {FROZEN: optax.set_to_zero(), ENCODER: encoder, HEAD: _adam(optim_cfg, lr)},
        lambda params: parameter_groups(params, freeze_feature_encoder),
    )
    parts = []
    if optim_cfg.clip_grad_norm > 0:
        parts.append(optax.clip_by_global_norm(optim_cfg.clip_grad_norm))
    parts.append(groups)
    return optax.chain(*parts), lr


def stop_encoder_gradient(params: PyTree, frozen: jax.Array) -> PyTree:
    """Zero gradient into `wav2vec2/` while `frozen` (a traced bool) holds.

    `where(frozen, stop_gradient(p), p)` has the value p and the gradient `where(frozen, 0, g)`:
    the frozen encoder then stays out of the clipped global norm, as under fairseq's `no_grad`.
    """
    encoder = jax.tree.map(lambda p: jnp.where(frozen, jax.lax.stop_gradient(p), p), params[ENCODER_PREFIX])
    return {**params, ENCODER_PREFIX: encoder}


# ---------------------------------------------------------------------------------------------
# Initialisation from a pretrained checkpoint.
# ---------------------------------------------------------------------------------------------


def _checkpoint_tree(path: str) -> dict:
    """Metadata tree ({name: ...{leaf metadata with .shape}}) of a checkpoint's parameters."""
    import os

    import orbax.checkpoint as ocp

    from xlsr_jax import checkpointing, fileio, pretrained

    if fileio.isfile(os.path.join(path, pretrained.MODEL_JSON)):  # local or gs://
        params_dir = os.path.join(path, pretrained.PARAMS_DIR)
    else:
        params_dir = checkpointing._resolve_step_dir(path)  # same rules as restore_params
    with ocp.StandardCheckpointer() as ckptr:
        meta = ckptr.metadata(fileio.abspath(params_dir))
    tree = getattr(meta, "item_metadata", meta)
    return getattr(tree, "tree", tree)


def _shapes(tree) -> dict[tuple[str, ...], tuple[int, ...]]:
    """{path: shape} of a nested dict whose leaves have `.shape`."""
    if hasattr(tree, "shape") and not isinstance(tree, dict):
        return {(): tuple(tree.shape)}
    return {(k, *p): s for k, v in tree.items() for p, s in _shapes(v).items()}


def _strip_value(tree):
    """Saved flax boxes appear as {"value": leaf}; compare and restore through them."""
    if isinstance(tree, dict):
        if set(tree) == {"value"} and not isinstance(tree["value"], dict):
            return tree["value"]
        return {k: _strip_value(v) for k, v in tree.items()}
    return tree


def restore_init_params(path: str, abstract_params: PyTree, fresh_params: PyTree) -> PyTree:
    """Parameters for a fine-tuning run: the pretrained encoder from `path`, new heads kept fresh.

    `path` may be a pretraining run (Wav2Vec2ForPreTraining: `wav2vec2/`, quantizer, ...), a
    fine-tuned run or export of any head model, or a headless `Wav2Vec2Model` export (its tree
    is the encoder itself). Every top-level part of the target whose shapes match the checkpoint
    is restored (so a CTC run with the same vocabulary also gets its head back); the others keep
    `fresh_params`, and are logged.

    Args:
      path: checkpoint (training run root / step / params dir, or exported directory).
      abstract_params: ShapeDtypeStruct tree with target shardings (the fine-tuning model's).
      fresh_params: the freshly initialised parameters (same structure).
    Returns:
      The merged parameter tree.
    Raises:
      ValueError: the checkpoint holds no encoder matching the model.
    """
    from xlsr_jax import checkpointing

    saved = _strip_value(_checkpoint_tree(path))
    if ENCODER_PREFIX not in saved and FEATURE_ENCODER in saved:
        saved = {ENCODER_PREFIX: saved}  # headless Wav2Vec2Model export
        headless = True
    else:
        headless = False
    request, kept = {}, []
    for name, sub in abstract_params.items():
        if name in saved and _shapes(saved[name]) == _shapes(sub):
            request[name] = sub
        else:
            kept.append(name)
    if ENCODER_PREFIX not in request:
        raise ValueError(
            f"{path}: no encoder ({ENCODER_PREFIX}/) with this model's shapes in the checkpoint (top-level "
            f"parts: {sorted(saved)}); check the model config (preset, scan_layers) against it"
        )
    if headless:
        restored = {ENCODER_PREFIX: checkpointing.restore_params(path, request[ENCODER_PREFIX], partial=True)}
    else:
        restored = checkpointing.restore_params(path, request, partial=True)
    if kept:
        log.info("from %s: restored %s; freshly initialised %s", path, sorted(request), sorted(kept))
    return {name: restored[name] if name in restored else fresh_params[name] for name in abstract_params}


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """sum(values * weights) / max(sum(weights), 1) in float32."""
    weights = weights.astype(jnp.float32)
    return jnp.sum(values.astype(jnp.float32) * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def row_weights(batch) -> jax.Array:
    """1 for real rows, 0 for filler rows (`valid` False) so they stay out of every loss."""
    if "valid" in batch:
        return batch["valid"].astype(jnp.float32)
    return jnp.ones(batch["audio"].shape[:1], jnp.float32)


def host_valid(batch) -> np.ndarray:
    """Host-side bool [B] of rows to score."""
    if "valid" in batch:
        return np.asarray(batch["valid"], bool)
    return np.ones(np.asarray(batch["language"]).shape[:1], bool)


def collect_eval_records(
    task: Any, params: PyTree, data_cfg: ml_collections.ConfigDict, split: str, max_batches: int | None = None
) -> list[tuple[dict, dict]]:
    """Runs a task's `eval_outputs` over one pass of a split on this host (after training).

    Args:
      task: a fine-tuning task (has `data_task`, `eval_outputs`).
      params: its parameters (host or device arrays).
      data_cfg: the `data` config section.
      split: "dev", "test", ...
      max_batches: stop after this many batches (None = the whole split).
    Returns:
      (host batch without audio, host outputs) pairs, as the trainer hands to `eval_report`.
    """
    import data_pipelines

    pipe = data_pipelines.build_input(data_cfg, split=split, task=task.data_task)
    # One compiled program per task object, reused across calls (before/after comparisons).
    outputs_fn = getattr(task, "_jitted_eval_outputs", None)
    if outputs_fn is None:
        outputs_fn = task._jitted_eval_outputs = jax.jit(task.eval_outputs)
    records = []
    try:
        for i, batch in enumerate(pipe):
            if max_batches is not None and i >= max_batches:
                break
            out = jax.device_get(outputs_fn(params, {k: jnp.asarray(v) for k, v in batch.items()}))
            records.append(({k: v for k, v in batch.items() if k not in ("audio", "padding_mask")}, out))
    finally:
        pipe.close()
    return records


class FinetuneTaskBase:
    """What the CTC and language-ID tasks share: optimizer with freezing, encoder init, rngs.

    Subclasses set `freeze_feature_encoder`, `freeze_updates` and `init_samples` in __init__.
    """

    freeze_feature_encoder: bool
    freeze_updates: int
    init_samples: int

    def create_optimizer(self, optim_cfg):
        """Adam with the frozen feature encoder and the initial Transformer freeze."""
        return finetune_optimizer(
            optim_cfg, freeze_feature_encoder=self.freeze_feature_encoder, freeze_updates=self.freeze_updates
        )

    def restore_init_params(self, path, abstract_params, fresh_params):
        """Pretrained encoder from `path`, the task's head freshly initialised."""
        return restore_init_params(path, abstract_params, fresh_params)

    def example_batch(self) -> dict[str, np.ndarray]:
        """Silence; parameter shapes do not depend on its length."""
        return {
            "audio": np.zeros((1, self.init_samples), np.float32),  # [batch, samples]
            "padding_mask": np.zeros((1, self.init_samples), bool),
        }

    @staticmethod
    def _rngs(rng: jax.Array) -> dict[str, jax.Array]:
        return {"dropout": jax.random.fold_in(rng, 0), "mask": jax.random.fold_in(rng, 1)}
