"""`Task`: what the trainer trains, with every hook's default written once.

The trainer (`xlsr_jax.trainer`) sits above this package and talks to a task only through the
methods below; a task never imports the trainer. A task names the model class it trains
(`architecture`, one of `xlsr_jax.models.ARCHITECTURES`), which the trainer records in every
checkpoint, and the input-pipeline mode it needs (`data_task`, the `task=` of
`data_pipelines.build_input`). Subclasses implement `loss` and `eval_metrics`; everything else
has a default that fits a Wav2Vec2 model built from `config.model`.

Array methods run inside `jit`; host-side methods (`eval_report`, `check_metrics`) do not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

PyTree = Any
Batch = Mapping[str, Any]


class Task:
    """Base class of the trainer's tasks (pretraining, CTC, language ID, ...).

    Class attributes:
      name: the `config.task` value that selects this task (its key in `xlsr_jax.tasks.TASKS`).
      architecture: the model class trained (`xlsr_jax.models.ARCHITECTURES`); recorded in every
        checkpoint so loaders never guess it.
      data_task: the input-pipeline mode (`data_pipelines.build_input(task=...)`).
      rng_streams: the flax RNG streams `apply` uses in training, in the order their keys are
        folded from the step key (changing the order changes every random draw).
      host_eval: True when the task scores evaluation on the host (`eval_outputs` per batch,
        then `eval_report` over the pass: decoding, WER/CER, accuracy).

    Attributes set by the default `__init__`:
      model_config: `Wav2Vec2Config` from `config.model` and the task's resolved fields.
      model: the flax module of `architecture`.
      init_samples: audio length (samples) of the batch used only to build parameter shapes.
    """

    name: ClassVar[str] = ""
    architecture: ClassVar[str] = ""
    data_task: ClassVar[str] = ""
    rng_streams: ClassVar[tuple[str, ...]] = ("dropout", "mask")
    host_eval: ClassVar[bool] = False

    model_config = None  # set by __init__; None for a task without a Wav2Vec2 model

    def __init__(self, config: ml_collections.ConfigDict, **model_overrides: Any):
        """Builds `architecture` from `config.model`; `config.train.init_num_samples` sizes the init batch.

        Args:
          config: the run config.
          **model_overrides: model fields the task resolves itself (e.g. the CTC vocabulary size);
            the trainer records the resolved model config in every checkpoint.
        """
        from xlsr_jax import models  # heavy: import lazily

        self.model_config = models.Wav2Vec2Config.from_dict({**config.model.to_dict(), **model_overrides})
        self.model = models.model_class(self.architecture)(self.model_config)
        self.init_samples = int(config.train.init_num_samples)
        # config.init.partial: restore only the parameters of init.checkpoint that fit.
        self.init_partial = bool(config.get("init", {}).get("partial", False))

    # --- Parameters and optimizer.

    def example_batch(self) -> dict[str, np.ndarray]:
        """A small host batch with the structure of a real one (silence; shapes do not depend on it)."""
        return {
            "audio": np.zeros((1, self.init_samples), np.float32),  # [batch, samples]
            "padding_mask": np.zeros((1, self.init_samples), bool),  # True = padding
        }

    def rngs(self, rng: jax.Array) -> dict[str, jax.Array]:
        """One key per stream of `rng_streams`, folded from `rng` in that order."""
        return {stream: jax.random.fold_in(rng, i) for i, stream in enumerate(self.rng_streams)}

    def init_params(self, rng: jax.Array, batch: Batch) -> PyTree:
        """Parameters of `self.model`, still boxed with their logical axis names (nn.LogicallyPartitioned)."""
        variables = self.model.init(
            {"params": rng, **self.rngs(jax.random.fold_in(rng, 1))},
            jnp.asarray(batch["audio"]),
            jnp.asarray(batch["padding_mask"]),
            deterministic=True,
        )
        return variables["params"]

    def create_optimizer(self, optim_cfg: ml_collections.ConfigDict):
        """(optax transformation, learning-rate schedule): AdamW over all parameters."""
        from xlsr_jax import optimizers

        return optimizers.create_optimizer(optim_cfg)

    def check_init_params(self, path: str, abstract_params: PyTree):
        """Compares `config.init.checkpoint` with the model from metadata, before anything is
        compiled: every parameter must be there with the model's shape and nothing more, unless
        `config.init.partial`.

        Returns:
          `checkpointing.ParamsComparison`.
        Raises:
          checkpointing.ModelMismatchError: listing every differing parameter and config field.
        """
        from xlsr_jax import checkpointing

        return checkpointing.check_init_matches(
            path, abstract_params, model_config=self.model_config.to_dict(), allow_partial=self.init_partial
        )

    def restore_init_params(self, path: str, abstract_params: PyTree, fresh_params: PyTree) -> PyTree:
        """Parameters for `config.init.checkpoint`: all of them from `path` (`check_init_params`);
        with `config.init.partial`, those that fit, the others from `fresh_params`.

        Args:
          path: anything `xlsr_jax.checkpointing.resolve` accepts.
          abstract_params: ShapeDtypeStruct tree with the target shardings.
          fresh_params: the freshly initialised parameters.
        """
        from xlsr_jax import checkpointing

        comparison = self.check_init_params(path, abstract_params)
        return checkpointing.restore_matching(path, abstract_params, fresh_params, comparison)

    # --- Steps (inside jit).

    def loss(
        self, params: PyTree, batch: Batch, rng: jax.Array, num_updates: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Training-mode loss (float32 scalar) and float32 scalar metrics (un-prefixed names)."""
        raise NotImplementedError(f"{type(self).__name__}.loss")

    def eval_metrics(self, params: PyTree, batch: Batch, rng: jax.Array) -> dict[str, jax.Array]:
        """Evaluation-mode float32 scalar metrics for one batch (averaged over batches)."""
        raise NotImplementedError(f"{type(self).__name__}.eval_metrics")

    def eval_outputs(self, params: PyTree, batch: Batch) -> dict[str, jax.Array]:
        """Per-row outputs for host-side scoring (only called when `host_eval`)."""
        raise NotImplementedError(f"{type(self).__name__} sets host_eval but has no eval_outputs")

    # --- Host side.

    def eval_report(
        self,
        records: Sequence[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
        step: int,
        workdir: str | None,
    ) -> dict[str, float]:
        """Scores a whole eval pass of (host batch, host outputs) pairs (only called when `host_eval`).

        Args:
          records: what `eval_outputs` returned per batch, with the batch minus its audio.
          step: the training step (names report files).
          workdir: where to write a report (None on processes other than 0).
        Returns:
          float metrics with un-prefixed names (the trainer adds `eval/`).
        """
        del records, step, workdir
        return {}

    def check_metrics(self, metrics: Mapping[str, float]) -> list[str]:
        """Warnings about host-side logged metrics (e.g. codebook collapse); none by default."""
        del metrics
        return []
