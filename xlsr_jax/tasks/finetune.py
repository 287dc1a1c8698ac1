"""What every fine-tuning task shares: the frozen encoder, init from a pretrained checkpoint, eval helpers.

The freezing itself (feature encoder always, the rest of the encoder for the first
`freeze_finetune_updates` updates; fairseq's fine-tuning recipe) is built by
`xlsr_jax.optimizers.create_optimizer`; `FinetuneTask` turns it on and stops the gradient into
the frozen encoder in its loss.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from xlsr_jax import optimizers
from xlsr_jax.tasks.base import Task

log = logging.getLogger("xlsr_jax.tasks")

PyTree = Any


def _shapes(tree) -> dict[tuple[str, ...], tuple[int, ...]]:
    """{path: shape} of a nested dict whose leaves have `.shape`."""
    if hasattr(tree, "shape") and not isinstance(tree, dict):
        return {(): tuple(tree.shape)}
    return {(k, *p): s for k, v in tree.items() for p, s in _shapes(v).items()}


def plan_init_params(
    path: str, abstract_params: PyTree, *, allow_partial: bool = False, model_config: dict | None = None
) -> tuple[bool, list[str], Any]:
    """What a fine-tuning run takes from `path`, decided from metadata before anything is compiled.

    `path` may be a pretraining run (Wav2Vec2ForPreTraining: `wav2vec2/`, quantizer, ...), a
    fine-tuned run or export of any head model, or a headless `Wav2Vec2Model` export (its tree
    is the encoder itself). The encoder must match the model exactly (with `allow_partial`,
    config.init.partial: the parameters that match); every other top-level part of the model
    whose shapes match the checkpoint is restored too (a CTC run with the same vocabulary gets
    its head back), the others stay freshly initialised.

    Returns:
      (headless, the top-level parts restored, `checkpointing.ParamsComparison` of what is
      restored, with paths as stored in the checkpoint).
    Raises:
      ValueError: the checkpoint holds no encoder. checkpointing.ModelMismatchError: the encoder
        differs (every differing parameter listed) and `allow_partial` is off.
    """
    from xlsr_jax import checkpointing

    found, saved = checkpointing.newest_params_metadata(path)
    saved = checkpointing.strip_boxes(saved)
    headless = optimizers.ENCODER_PREFIX not in saved and optimizers.FEATURE_ENCODER in saved
    if headless:
        saved = {optimizers.ENCODER_PREFIX: saved}  # headless Wav2Vec2Model export
    if optimizers.ENCODER_PREFIX not in saved:
        raise ValueError(
            f"{path}: no encoder ({optimizers.ENCODER_PREFIX}/) in the checkpoint "
            f"(top-level parts: {sorted(saved)}); check the model config (preset, scan_layers) against it"
        )
    parts = [optimizers.ENCODER_PREFIX] + [
        name
        for name, sub in abstract_params.items()
        if name != optimizers.ENCODER_PREFIX and name in saved and _shapes(saved[name]) == _shapes(sub)
    ]
    if headless:
        comparison = checkpointing.compare_params(saved[optimizers.ENCODER_PREFIX], abstract_params[parts[0]])
    else:
        comparison = checkpointing.compare_params(
            {name: saved[name] for name in parts}, {name: abstract_params[name] for name in parts}
        )
    if not comparison.exact and not (allow_partial and comparison.matching):
        raise checkpointing.ModelMismatchError(checkpointing.init_mismatch_message(found, comparison, model_config))
    return headless, parts, comparison


def restore_init_params(
    path: str,
    abstract_params: PyTree,
    fresh_params: PyTree,
    *,
    allow_partial: bool = False,
    model_config: dict | None = None,
) -> PyTree:
    """Parameters for a fine-tuning run: the pretrained encoder from `path`, new heads kept fresh
    (`plan_init_params` says which parts; the fresh ones are logged).

    Args:
      path: anything `xlsr_jax.checkpointing.resolve` accepts.
      abstract_params: ShapeDtypeStruct tree with target shardings (the fine-tuning model's).
      fresh_params: the freshly initialised parameters (same structure).
      allow_partial: config.init.partial (see `plan_init_params`).
      model_config: the model's config dict (names differing fields in a mismatch error).
    Returns:
      The merged parameter tree.
    Raises:
      ValueError: the checkpoint holds no encoder. checkpointing.ModelMismatchError: it differs.
    """
    from xlsr_jax import checkpointing

    headless, parts, comparison = plan_init_params(
        path, abstract_params, allow_partial=allow_partial, model_config=model_config
    )
    if headless:
        encoder_name = optimizers.ENCODER_PREFIX
        encoder = checkpointing.restore_matching(
            path, abstract_params[encoder_name], fresh_params[encoder_name], comparison
        )
        restored = {encoder_name: encoder}
    else:
        restored = checkpointing.restore_matching(
            path,
            {name: abstract_params[name] for name in parts},
            {name: fresh_params[name] for name in parts},
            comparison,
        )
    kept = sorted(set(abstract_params) - set(parts))
    if kept:
        log.info("from %s: restored %s; freshly initialised %s", path, sorted(parts), kept)
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
    task: FinetuneTask, params: PyTree, data_cfg: ml_collections.ConfigDict, split: str, max_batches: int | None = None
) -> list[tuple[dict, dict]]:
    """Runs a task's `eval_outputs` over one pass of a split on this host (after training).

    Args:
      task: a task with `host_eval` (CTC, language ID).
      params: its parameters (host or device arrays).
      data_cfg: the `data` config section.
      split: "dev", "test", ...
      max_batches: stop after this many batches (None = the whole split).
    Returns:
      (host batch without audio, host outputs) pairs, as the trainer hands to `eval_report`.
    """
    import data_pipelines

    pipe = data_pipelines.build_input(data_cfg, split=split, task=task.data_task)
    records = []
    try:
        for i, batch in enumerate(pipe):
            if max_batches is not None and i >= max_batches:
                break
            out = jax.device_get(task.jitted_eval_outputs(params, {k: jnp.asarray(v) for k, v in batch.items()}))
            records.append(({k: v for k, v in batch.items() if k not in ("audio", "padding_mask")}, out))
    finally:
        pipe.close()
    return records


class FinetuneTask(Task):
    """A pretrained encoder plus a new head: frozen feature encoder, Transformer frozen for the
    first `config.finetune.freeze_finetune_updates` updates, init from a pretrained checkpoint,
    host-side evaluation."""

    host_eval = True

    def __init__(self, config: ml_collections.ConfigDict, **model_overrides: Any):
        """Reads the freezing settings (`finetune.freeze_finetune_updates`, `model.feature_grad_mult`)."""
        super().__init__(config, **model_overrides)
        self.freeze_updates = int(config.finetune.freeze_finetune_updates)
        self.freeze_feature_encoder = self.model_config.feature_grad_mult <= 0.0
        self._jitted_eval_outputs = None

    @property
    def jitted_eval_outputs(self):
        """`jax.jit(self.eval_outputs)`, compiled once per task object (before/after comparisons)."""
        if self._jitted_eval_outputs is None:
            self._jitted_eval_outputs = jax.jit(self.eval_outputs)
        return self._jitted_eval_outputs

    def create_optimizer(self, optim_cfg):
        """Adam with the frozen feature encoder and the initial Transformer freeze."""
        return optimizers.create_optimizer(
            optim_cfg, freeze_feature_encoder=self.freeze_feature_encoder, freeze_updates=self.freeze_updates
        )

    def check_init_params(self, path, abstract_params):
        """The encoder of `path` against the model, from metadata (`plan_init_params`)."""
        return plan_init_params(
            path, abstract_params, allow_partial=self.init_partial, model_config=self.model_config.to_dict()
        )

    def restore_init_params(self, path, abstract_params, fresh_params):
        """Pretrained encoder from `path`, the task's head freshly initialised (`restore_init_params`)."""
        return restore_init_params(
            path,
            abstract_params,
            fresh_params,
            allow_partial=self.init_partial,
            model_config=self.model_config.to_dict(),
        )

    def encoder_frozen(self, params: PyTree, num_updates: jax.Array) -> tuple[PyTree, jax.Array]:
        """(params with no gradient into the encoder while it is frozen, float32 0/1 "frozen" metric)."""
        frozen = num_updates < self.freeze_updates
        if self.freeze_updates > 0:
            params = optimizers.stop_encoder_gradient(params, frozen)
        return params, frozen.astype(jnp.float32)
