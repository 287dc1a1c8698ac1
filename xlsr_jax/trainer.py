"""The training loop: `train_and_evaluate(config, workdir)`.

Read top to bottom in sections, as big_vision's train.py: mesh; task (what is trained),
optimizer, sharded state and the jitted update step (`build_training`, shared with the AOT
compiler); input; state init (or resume); checkpoints, eval, loop.

The trainer knows nothing about wav2vec 2.0 itself: it talks to a *task* object with a narrow
interface (`Task` below). Pretraining is `PretrainTask`; fine-tuning tasks (CTC, language ID)
register themselves with `register_task` and reuse everything else here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from xlsr_jax import checkpointing, fileio, schedules, sharding
from xlsr_jax import metrics as metrics_lib

log = logging.getLogger("xlsr_jax.train")

PyTree = Any
Batch = Mapping[str, np.ndarray]


class NonFiniteTrainingError(RuntimeError):
    """Raised when too many consecutive steps had a non-finite loss or gradient."""


# ---------------------------------------------------------------------------------------------
# Train state.
# ---------------------------------------------------------------------------------------------


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; checkpointed as params + the rest.

    Attributes:
      step: int32 scalar, batches consumed so far (also the checkpoint step).
      params: model parameters.
      opt_state: optax state; advances only on good (finite) steps.
      rng: uint32 [2] base PRNG key; step keys are `fold_in(rng, step)`, so resume is exact.
      num_skipped: int32 scalar, steps whose update was skipped (non-finite loss/grad).
      bad_streak: int32 scalar, consecutive skipped steps up to now.
    """

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    rng: jax.Array
    num_skipped: jax.Array
    bad_streak: jax.Array

    @property
    def num_updates(self) -> jax.Array:
        """Updates actually applied: what the learning-rate and temperature schedules follow."""
        return self.step - self.num_skipped

    def rest(self) -> dict[str, PyTree]:
        """The non-parameter part, as saved in a checkpoint's `train_state` item."""
        return {
            "step": self.step,
            "opt_state": self.opt_state,
            "rng": self.rng,
            "num_skipped": self.num_skipped,
            "bad_streak": self.bad_streak,
        }

    @classmethod
    def from_parts(cls, params: PyTree, rest: Mapping[str, PyTree]) -> TrainState:
        """Inverse of (`params`, `rest()`)."""
        return cls(params=params, **rest)


# ---------------------------------------------------------------------------------------------
# Tasks: the trainer's only view of the model.
# ---------------------------------------------------------------------------------------------


class Task(Protocol):
    """What a trainable task provides. All array methods run inside jit.

    Attributes:
      data_task: the `task=` name passed to `data_pipelines.build_input` ("pretrain", "ctc", ...).

    Optional methods (fine-tuning tasks, `xlsr_jax.tasks`): `create_optimizer(optim_cfg)` replaces
    `create_optimizer` below (frozen parameters); `restore_init_params(path, abstract, fresh)`
    replaces the params-only init (new heads keep `fresh`); `eval_outputs(params, batch)` (jitted)
    and `eval_report(records, step, workdir)` add host-side eval metrics (WER/CER, accuracy).
    """

    data_task: str

    def example_batch(self) -> dict[str, np.ndarray]:
        """A small host batch with the structure of a real one (used to build parameters)."""

    def init_params(self, rng: jax.Array, batch: Batch) -> PyTree:
        """Parameters, still boxed with their logical axis names (nn.LogicallyPartitioned)."""

    def loss(
        self, params: PyTree, batch: Batch, rng: jax.Array, num_updates: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Training-mode loss (float32 scalar) and float32 scalar metrics (un-prefixed names)."""

    def eval_metrics(self, params: PyTree, batch: Batch, rng: jax.Array) -> dict[str, jax.Array]:
        """Evaluation-mode float32 scalar metrics for one batch (averaged over batches)."""

    def check_metrics(self, metrics: Mapping[str, float]) -> list[str]:
        """Warnings about host-side logged metrics (e.g. codebook collapse)."""


def _drop_invalid_rows(out, batch: Batch):
    """Takes filler rows (batch["valid"] False: end of an eval pass, stand-ins for undecodable
    files) out of the contrastive loss by unmasking all their frames."""
    if "valid" not in batch:
        return out
    return out._replace(mask_time_indices=out.mask_time_indices & batch["valid"][:, None])  # [B, T]


class PretrainTask:
    """wav2vec 2.0 / XLSR self-supervised pretraining: contrastive + diversity (+ feature penalty)."""

    data_task = "pretrain"

    def __init__(self, config: ml_collections.ConfigDict):
        """Builds the model from `config.model` and the temperature schedule from `config.train`."""
        from xlsr_jax.models import (  # heavy: import lazily
            Wav2Vec2Config,
            Wav2Vec2ForPreTraining,
        )

        self.model_config = Wav2Vec2Config.from_dict(config.model.to_dict())
        self.model = Wav2Vec2ForPreTraining(self.model_config)
        self.temperature = schedules.gumbel_temperature(
            config.train.gumbel_max_temperature,
            config.train.gumbel_min_temperature,
            config.train.gumbel_temperature_decay,
        )
        self.collapse_fraction = config.train.codebook_collapse_fraction
        self.init_samples = config.train.init_num_samples

    def example_batch(self) -> dict[str, np.ndarray]:
        """One second-ish of silence; parameter shapes do not depend on the length."""
        return {
            "audio": np.zeros((1, self.init_samples), np.float32),  # [batch, samples]
            "padding_mask": np.zeros((1, self.init_samples), bool),
        }

    def _rngs(self, rng: jax.Array) -> dict[str, jax.Array]:
        return {name: jax.random.fold_in(rng, i) for i, name in enumerate(("dropout", "gumbel", "mask"))}

    def init_params(self, rng: jax.Array, batch: Batch) -> PyTree:
        """Boxed parameters of Wav2Vec2ForPreTraining."""
        rngs = {"params": rng, **self._rngs(jax.random.fold_in(rng, 1))}
        variables = self.model.init(
            rngs, jnp.asarray(batch["audio"]), jnp.asarray(batch["padding_mask"]), deterministic=True
        )
        return variables["params"]

    def loss(self, params, batch, rng, num_updates):
        """The pretraining loss with dropout, Gumbel noise and fresh masks; temperature annealed."""
        from xlsr_jax import losses

        temperature = self.temperature(num_updates)
        out = self.model.apply(
            {"params": params},
            batch["audio"],
            batch["padding_mask"],  # [B, S]
            gumbel_temperature=temperature,
            deterministic=False,
            rngs=self._rngs(rng),
        )
        loss, metrics = losses.pretraining_loss(_drop_invalid_rows(out, batch), self.model_config)
        metrics["gumbel_temperature"] = temperature
        return loss, metrics

    def eval_metrics(self, params, batch, rng):
        """Deterministic loss on held-out audio (masks and distractors drawn from a fixed key)."""
        from xlsr_jax import losses

        out = self.model.apply(
            {"params": params}, batch["audio"], batch["padding_mask"], deterministic=True, rngs=self._rngs(rng)
        )
        _, metrics = losses.pretraining_loss(_drop_invalid_rows(out, batch), self.model_config)
        return metrics

    def check_metrics(self, metrics):
        """Warns when the codebook collapses: code perplexity below a fraction of G x V."""
        num_codes = self.model_config.num_codevectors
        perplexity = metrics.get("train/code_perplexity")
        if perplexity is not None and perplexity < self.collapse_fraction * num_codes:
            return [
                (
                    f"codebook collapse: code perplexity {perplexity:.1f} is below "
                    f"{self.collapse_fraction:.0%} of the {num_codes} codevectors (G x V); the "
                    "quantizer uses few entries. Usual remedies: raise diversity_loss_weight, keep "
                    "the Gumbel temperature higher for longer, lower the learning rate."
                )
            ]
        return []


TASKS: dict[str, Callable[[ml_collections.ConfigDict], Task]] = {"pretrain": PretrainTask}


def register_task(name: str, factory: Callable[[ml_collections.ConfigDict], Task]) -> None:
    """Makes `config.task = name` train `factory(config)` (fine-tuning tasks plug in here)."""
    TASKS[name] = factory


def create_task(config: ml_collections.ConfigDict) -> Task:
    """The task named by `config.task`."""
    if config.task not in TASKS:
        import xlsr_jax.tasks  # noqa: F401 - registers the fine-tuning tasks ("ctc", "lid")
    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r}; registered: {sorted(TASKS)}")
    return TASKS[config.task](config)


# ---------------------------------------------------------------------------------------------
# Optimizer.
# ---------------------------------------------------------------------------------------------


def create_optimizer(optim_cfg: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, Callable]:
    """AdamW with global-norm clipping and the configured schedule (fairseq's wav2vec recipes).

    fairseq's `adam` applies decoupled weight decay to every parameter, which is optax.adamw
    with no mask. Clipping happens on the raw gradient, before Adam, as fairseq's clip_norm.

    Returns:
      (transformation, learning-rate schedule as a function of the update count).
    """
    if optim_cfg.name != "adamw":
        raise ValueError(f"unknown optimizer {optim_cfg.name!r} (only 'adamw' is implemented)")
    lr = schedules.create_learning_rate_schedule(optim_cfg)
    parts = []
    if optim_cfg.clip_grad_norm > 0:
        parts.append(optax.clip_by_global_norm(optim_cfg.clip_grad_norm))
    parts.append(
        optax.adamw(lr, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps, weight_decay=optim_cfg.weight_decay)
    )
    return optax.chain(*parts), lr


# ---------------------------------------------------------------------------------------------
# Steps.
# ---------------------------------------------------------------------------------------------


def _split_microbatches(batch: Batch, accum_steps: int) -> Batch:
    """[B, ...] -> [accum_steps, B / accum_steps, ...]; microbatch j holds rows r * accum_steps + j.

    Interleaved rows (not contiguous blocks) keep every microbatch spread over all batch shards,
    so splitting needs no communication when B is sharded in contiguous blocks.
    """

    def split(x):
        if x.shape[0] % accum_steps:
            raise ValueError(f"global batch {x.shape[0]} is not divisible by grad_accum_steps={accum_steps}")
        x = x.reshape((x.shape[0] // accum_steps, accum_steps) + x.shape[1:])
        return jnp.moveaxis(x, 1, 0)

    return jax.tree.map(split, batch)


def make_train_step(task: Task, tx: optax.GradientTransformation, lr_schedule: Callable, accum_steps: int = 1):
    """The un-jitted update: (state, batch) -> (state, metrics).

    A non-finite loss or gradient norm leaves params and optimizer state exactly as they were
    (`jnp.where` over the whole update) and is counted in `num_skipped` / `bad_streak`.

    With `accum_steps` > 1 the batch is cut into that many microbatches whose gradients are
    averaged in a `lax.scan` before one update (fairseq `update_freq`): activation memory of a
    microbatch, update of the whole batch. Each microbatch's loss is already a mean, so the
    average weights microbatches equally (fairseq weights by masked frames; equal when the
    microbatches hold the same number).
    """

    def train_step(state: TrainState, batch: Batch):
        rng = jax.random.fold_in(state.rng, state.step)
        num_updates = state.num_updates

        def loss_fn(params, microbatch, micro_rng):
            return task.loss(params, microbatch, micro_rng, num_updates)

        value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
        if accum_steps == 1:
            (loss, task_metrics), grads = value_and_grad(state.params, batch, rng)
        else:
            micro = _split_microbatches(batch, accum_steps)

            def accumulate(carry, inputs):
                index, microbatch = inputs
                (m_loss, m_metrics), m_grads = value_and_grad(state.params, microbatch, jax.random.fold_in(rng, index))
                return jax.tree.map(jnp.add, carry, (m_loss, m_metrics, m_grads)), None

            first = jax.tree.map(lambda x: x[0], micro)
            shapes = jax.eval_shape(value_and_grad, state.params, first, rng)
            zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
            zeros = (zeros[0][0], zeros[0][1], zeros[1])
            sums, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(accum_steps), micro))
            loss, task_metrics, grads = jax.tree.map(lambda x: x / accum_steps, sums)
        grad_norm = optax.tree.norm(grads)
        updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)

        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep_if_finite = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        bad = (~finite).astype(jnp.int32)
        new_state = state.replace(
            step=state.step + 1,
            params=keep_if_finite(new_params, state.params),
            opt_state=keep_if_finite(new_opt_state, state.opt_state),
            num_skipped=state.num_skipped + bad,
            bad_streak=(state.bad_streak + 1) * bad,
        )
        out = {f"train/{k}": v for k, v in task_metrics.items()}
        out["train/loss"] = loss
        out["train/grad_norm"] = grad_norm
        out["train/lr"] = lr_schedule(num_updates)
        out["train/skipped_steps"] = new_state.num_skipped.astype(jnp.float32)
        return new_state, out

    return train_step


def make_eval_step(task: Task):
    """The un-jitted eval: (params, batch, rng) -> metrics with `eval/` names."""

    def eval_step(params, batch, rng):
        return {f"eval/{k}": v for k, v in task.eval_metrics(params, batch, rng).items()}

    return eval_step


# ---------------------------------------------------------------------------------------------
# Helpers for the loop.
# ---------------------------------------------------------------------------------------------


class _PreemptionWatcher:
    """Notices SIGTERM (single host) or JAX's preemption sync point (multi-host)."""

    def __init__(self, manager: checkpointing.CheckpointManager):
        self._manager = manager
        self._flag = threading.Event()
        self._previous = None
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame):
        del signum, frame
        self._flag.set()

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            return self._manager.reached_preemption(step)
        return self._flag.is_set()

    def close(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _flops_per_step(compiled) -> float:
    """FLOPs of one call of a compiled step on one device, from XLA's cost analysis (0 if absent)."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return 0.0
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", 0.0))


def _abstract_batch(batch: Batch, mesh) -> dict[str, jax.ShapeDtypeStruct]:
    shards = sharding.batch_sharding(mesh)
    return {
        k: jax.ShapeDtypeStruct((v.shape[0] * jax.process_count(),) + v.shape[1:], v.dtype, sharding=shards)
        for k, v in batch.items()
    }


def _global_host_batch(batch: Batch) -> dict[str, np.ndarray]:
    """Every process's rows of a batch (without the audio), for host-side evaluation."""
    small = {k: v for k, v in batch.items() if k not in ("audio", "padding_mask")}
    if jax.process_count() == 1:
        return small
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(small, tiled=True)


def _default_input_builder(data_cfg, *, split, task, process_index, process_count):
    import data_pipelines  # the input pipeline is only needed when training on real data

    return data_pipelines.build_input(
        data_cfg, split=split, task=task, process_index=process_index, process_count=process_count
    )


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    resolved = json.loads(config.to_json_best_effort())
    if jax.process_index() == 0:
        fileio.write_text(fileio.join(workdir, "config.json"), json.dumps(resolved, indent=2, sort_keys=True))
    return resolved


# ---------------------------------------------------------------------------------------------
# train_and_evaluate.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Training:
    """A run's task, sharded state and jitted update step, before any array is allocated.

    Shared by `train_and_evaluate` and the ahead-of-time compiler (experiments/aot_compile.py),
    so that what is compiled for a TPU topology is exactly what the trainer runs.

    Attributes:
      task: the `Task` (pretraining, CTC, language ID).
      mesh: the device mesh.
      rules: logical axis rules (defaults merged with the config's overrides).
      abstract_state: `TrainState` of `jax.ShapeDtypeStruct`s carrying their shardings.
      state_sharding: `TrainState` of `NamedSharding`s (from the parameters' logical axes).
      init_state: jitted `rng -> TrainState`, each array created directly in its shards.
      train_step: jitted `(state, batch) -> (state, metrics)`, the state donated.
    """

    task: Task
    mesh: jax.sharding.Mesh
    rules: tuple[tuple[str, Any], ...]
    abstract_state: TrainState
    state_sharding: TrainState
    init_state: Callable[[jax.Array], TrainState]
    train_step: Callable

    def tracing(self):
        """A context that puts the mesh and the logical rules in scope (for tracing)."""
        return sharding.mesh_rules_context(self.mesh, self.rules)


def build_training(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Training:
    """The task, optimizer, sharded state (from logical annotations) and update step for `config`."""
    task = create_task(config)
    # Fine-tuning tasks build their own optimizer (parameter freezing, per-group schedules).
    tx, lr_schedule = getattr(task, "create_optimizer", create_optimizer)(config.optim)
    rules = sharding.logical_axis_rules_with(config.sharding.get("logical_axis_rules"))
    example = task.example_batch()

    def init_boxed(rng):
        params_rng, state_rng = jax.random.split(rng)
        params = task.init_params(params_rng, example)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=state_rng,
            num_skipped=jnp.zeros((), jnp.int32),
            bad_streak=jnp.zeros((), jnp.int32),
        )

    with sharding.mesh_rules_context(mesh, rules):
        # The key's shape follows the configured PRNG implementation (threefry [2], rbg [4]).
        abstract_boxed = jax.eval_shape(init_boxed, jax.eval_shape(jax.random.PRNGKey, 0))
    state_sharding = sharding.state_shardings(abstract_boxed, mesh, rules)
    abstract_state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(abstract_boxed), state_sharding
    )
    train_step = jax.jit(
        make_train_step(task, tx, lr_schedule, config.train.get("grad_accum_steps", 1)),
        in_shardings=(state_sharding, None),
        out_shardings=(state_sharding, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )
    return Training(
        task=task,
        mesh=mesh,
        rules=rules,
        abstract_state=abstract_state,
        state_sharding=state_sharding,
        init_state=jax.jit(lambda rng: nn.unbox(init_boxed(rng)), out_shardings=state_sharding),
        train_step=train_step,
    )


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    devices: list[jax.Device] | None = None,
    input_builder: Callable[..., Iterator[Batch]] | None = None,
) -> TrainState:
    """Trains (resuming from `workdir` when it holds a checkpoint) and evaluates periodically.

    Args:
      config: the run config (sections model, data, train, optim, mesh, sharding, ckpt, eval, init).
      workdir: run directory (local or gs://...): config.json, metrics.jsonl, checkpoints/,
        tensorboard/, eval/.
      devices: devices for the mesh (default: all devices of all processes).
      input_builder: `(data_cfg, split=, task=, process_index=, process_count=)` -> iterator of
        numpy batches with `get_state()`/`set_state()`; default `data_pipelines.build_input`.
    Returns:
      The final TrainState (sharded on the run's mesh).
    Raises:
      NonFiniteTrainingError: `train.max_consecutive_bad_steps` non-finite steps in a row.
    """
    input_builder = input_builder or _default_input_builder
    total_steps = config.train.total_steps

    # --- Mesh; then task, optimizer, sharded state and the jitted step (`build_training`).
    mesh = sharding.create_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices=devices)
    repl = sharding.replicated(mesh)
    log.info("mesh %s over %d devices, %d processes", dict(mesh.shape), mesh.size, jax.process_count())
    training = build_training(config, mesh)
    resolved_config = _write_config(config, workdir)  # after the task has resolved data-dependent sizes
    task, tracing = training.task, training.tracing
    state_sharding, abstract_state = training.state_sharding, training.abstract_state

    # --- Input.
    train_iter = input_builder(
        config.data,
        split=config.data.get("train_split", "train"),
        task=task.data_task,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )

    ckpt_dir = os.path.join(workdir, "checkpoints")
    manager = checkpointing.CheckpointManager(
        ckpt_dir, save_every_steps=config.ckpt.every_steps, keep=config.ckpt.keep, async_save=config.ckpt.async_save
    )
    latest = manager.latest_step()
    if latest is not None:
        params, rest, saved_config, data_state = manager.restore(latest, abstract_state.params, abstract_state.rest())
        state = TrainState.from_parts(params, rest)
        if saved_config.get("model") != resolved_config.get("model"):
            log.warning("the model config differs from the one in checkpoint %d", latest)
        if data_state is not None:
            train_iter.set_state(data_state)
        log.info("resumed from checkpoint step %d", latest)
    else:
        with tracing():
            state = training.init_state(jax.random.PRNGKey(config.train.seed))
        if config.init.checkpoint:
            restore_init = getattr(task, "restore_init_params", None)  # new heads keep their init
            if restore_init is not None:
                params = restore_init(config.init.checkpoint, abstract_state.params, state.params)
            else:
                params = checkpointing.restore_params(config.init.checkpoint, abstract_state.params, partial=True)
            state = state.replace(params=params)
            log.info("initialised parameters from %s", config.init.checkpoint)

    # --- Compiled steps (one executable per distinct batch shape: buckets, not batches).
    train_step = training.train_step
    eval_step = jax.jit(make_eval_step(task), in_shardings=(state_sharding.params, None, repl), out_shardings=repl)
    compiled: dict[Any, tuple[Any, float]] = {}

    def compiled_train_step(batch_host: Batch):
        key = tuple(sorted((k, v.shape, str(v.dtype)) for k, v in batch_host.items()))
        if key not in compiled:
            with tracing():
                exe = train_step.lower(abstract_state, _abstract_batch(batch_host, mesh)).compile()
            compiled[key] = (exe, _flops_per_step(exe))
            log.info(
                "compiled train step for batch %s (%.3g FLOPs/device/step)",
                {k: v.shape for k, v in batch_host.items()},
                compiled[key][1],
            )
        return compiled[key]

    # Optional host-side evaluation (decoding, WER/CER): the task's jitted `eval_outputs` per
    # batch, then `eval_report` over all of them.
    eval_outputs = None
    if hasattr(task, "eval_outputs"):
        eval_outputs = jax.jit(task.eval_outputs, in_shardings=(state_sharding.params, None), out_shardings=repl)

    def run_eval(params, step: int) -> dict[str, float]:
        eval_iter = input_builder(
            config.data,
            split=config.eval.split,
            task=task.data_task,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        sums: dict[str, float] = {}
        count = 0
        records = []
        for i in range(config.eval.num_batches):
            try:
                batch = next(eval_iter)
            except StopIteration:
                break
            with tracing():
                out = eval_step(params, sharding.shard_batch(batch, mesh), jax.random.PRNGKey(i))
            for k, v in jax.device_get(out).items():
                sums[k] = sums.get(k, 0.0) + float(v)
            count += 1
            if eval_outputs is not None:
                with tracing():
                    outputs = eval_outputs(params, sharding.shard_batch(batch, mesh))
                records.append((_global_host_batch(batch), jax.device_get(outputs)))
        if hasattr(eval_iter, "close"):
            eval_iter.close()
        result = {k: v / count for k, v in sums.items()} if count else {}
        if eval_outputs is not None and records:
            report = task.eval_report(records, step, workdir if jax.process_index() == 0 else None)
            result.update({f"eval/{k}": float(v) for k, v in report.items()})
        return result

    # --- Loop.
    step = int(jax.device_get(state.step))
    writer = metrics_lib.MetricWriter(
        os.path.join(workdir, "tensorboard"),
        total_steps=total_steps,
        initial_step=step,
        progress_bar=config.train.progress_bar,
        jsonl_path=os.path.join(workdir, "metrics.jsonl"),
    )
    peak_flops = metrics_lib.peak_flops_per_device(config.train.peak_flops_per_device)
    watcher = _PreemptionWatcher(manager)
    max_bad = config.train.max_consecutive_bad_steps
    sample_rate = config.train.sample_rate
    last_metrics = None
    window_start, window_samples, window_flops, window_steps = time.perf_counter(), 0, 0.0, 0

    def check_bad_streak():
        streak = int(jax.device_get(state.bad_streak))
        if max_bad and streak >= max_bad:
            manager.wait()
            last_good = manager.latest_step()
            writer.close()
            watcher.close()
            manager.close()
            raise NonFiniteTrainingError(
                f"{streak} consecutive steps (up to step {step}) had a non-finite loss or gradient; "
                f"their updates were skipped and training stops. The last checkpoint "
                f"(step {last_good}) holds the last good parameters. Look for NaN/inf or silent "
                "audio in the data, lower optim.lr, or use float32."
            )

    saved_steps = set(manager.all_steps())

    def save(force: bool) -> bool:
        if step in saved_steps or (not force and not manager.should_save(step)):
            return False
        check_bad_streak()  # never write a checkpoint from a run that is failing
        saved = manager.save(
            step, state.params, state.rest(), config=resolved_config, data_state=train_iter.get_state(), force=force
        )
        if saved:
            saved_steps.add(step)
        return saved

    preempted = False
    num_compiled = 0
    try:
        while step < total_steps:
            if watcher.reached(step):
                log.warning("preemption signal at step %d: saving a checkpoint and stopping", step)
                save(force=True)
                preempted = True
                break
            batch = next(train_iter)  # numpy, this process's share of the global batch
            executable, flops = compiled_train_step(batch)
            if len(compiled) != num_compiled:  # a new bucket shape: keep compile time out of perf/
                num_compiled = len(compiled)
                window_start = time.perf_counter()
            if "padding_mask" in batch:
                window_samples += int(np.sum(~batch["padding_mask"])) * jax.process_count()
            # The hot path: an explicit placement of the batch, then one dispatch. Implicit
            # host<->device copies here would stall every step (train.transfer_guard).
            with jax.transfer_guard(config.train.get("transfer_guard", "allow")):
                state, last_metrics = executable(state, sharding.shard_batch(batch, mesh))
            step += 1
            window_flops += flops
            window_steps += 1
            writer.advance(step)

            if step % config.train.log_every == 0 or step == total_steps:
                host = {k: float(v) for k, v in jax.device_get(last_metrics).items()}
                elapsed = time.perf_counter() - window_start
                host["perf/steps_per_sec"] = window_steps / elapsed
                host["perf/audio_sec_per_sec"] = window_samples / sample_rate / elapsed
                if peak_flops:
                    host["perf/mfu"] = window_flops / elapsed / peak_flops
                writer.write_scalars(step, host)
                for message in task.check_metrics(host):
                    writer.warn(message)
                check_bad_streak()
                window_start, window_samples, window_flops, window_steps = time.perf_counter(), 0, 0.0, 0

            if config.eval.every_steps and (step % config.eval.every_steps == 0 or step == total_steps):
                writer.write_scalars(step, run_eval(state.params, step))
                window_start = time.perf_counter()  # keep eval time out of the throughput
            save(force=False)

        if not preempted:
            save(force=True)
    finally:
        manager.close()  # waits for the asynchronous write to be committed
        writer.close()
        watcher.close()
    return state
