"""The training loop: `train_and_evaluate(config, workdir)`.

Read top to bottom in sections, as big_vision's train.py: mesh; task (what is trained),
optimizer, sharded state and the jitted update step (`build_training`, shared with the AOT
compiler); input; state init (or resume); checkpoints, eval, loop.

The trainer sits above `xlsr_jax.tasks` and knows nothing about wav2vec 2.0 itself: it calls
the hooks of the `tasks.Task` named by `config.task` (`tasks.TASKS`), and records the task's
architecture in every checkpoint. How a run starts (resume, init from a checkpoint, fresh) is
`checkpointing.restore_or_init`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from xlsr_jax import checkpointing, fileio, sharding, tasks
from xlsr_jax import metrics as metrics_lib
from xlsr_jax.constants import SAMPLE_RATE
from xlsr_jax.tasks import Task

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


def _resolved_config(config: ml_collections.ConfigDict, task: Task) -> dict[str, Any]:
    """The resolved config as JSON: what goes to `<workdir>/config.json` and into every
    checkpoint. It records what the task trains: `architecture` (the model class) and the model
    fields the task resolved (e.g. the CTC vocabulary size)."""
    resolved = json.loads(config.to_json_best_effort())
    resolved["architecture"] = task.architecture
    if task.model_config is not None:
        resolved["model"] = {**resolved.get("model", {}), **json.loads(task.model_config.to_json())}
    return resolved


def _write_config(resolved: dict[str, Any], workdir: str) -> None:
    """Writes `<workdir>/config.json` (process 0), once the checkpoint is known to fit the model."""
    if jax.process_index() == 0:
        fileio.write_text(
            fileio.join(workdir, checkpointing.RUN_CONFIG), json.dumps(resolved, indent=2, sort_keys=True)
        )


def _setup_compilation_cache(config: ml_collections.ConfigDict, workdir: str) -> str | None:
    """Turns on JAX's persistent compilation cache so a restarted run skips recompiling.

    `train.compilation_cache_dir`: "" = `<workdir>/jax_cache`, "none" = off, else that folder
    (e.g. ~/.cache/xlsr_jax/jax for runs sharing one). A cache already configured for the process
    (JAX_COMPILATION_CACHE_DIR, an earlier run) is kept. Returns the folder in use, or None.
    """
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return configured
    wanted = config.train.get("compilation_cache_dir", "")
    if wanted == "none":
        return None
    cache_dir = os.path.expanduser(wanted) if wanted else fileio.join(workdir, "jax_cache")
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    # Cache every program that took a second to compile (JAX's default skips nothing shorter
    # than 1 s as well; the train step of any real model is far above it).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return cache_dir


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
    task = tasks.create_task(config)
    tx, lr_schedule = task.create_optimizer(config.optim)  # fine-tuning: with parameter freezing
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
    workdir = fileio.abspath(workdir)  # Orbax needs absolute paths (`--workdir runs/sw` is relative)
    total_steps = config.train.total_steps
    # A workdir that cannot be written stops the run now, not at its first save.
    checkpointing.check_writable(fileio.join(workdir, checkpointing.CHECKPOINTS))
    cache_dir = _setup_compilation_cache(config, workdir)
    if cache_dir:
        log.info("persistent compilation cache: %s", cache_dir)

    # --- Mesh; then task, optimizer, sharded state and the jitted step (`build_training`).
    mesh = sharding.create_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices=devices)
    repl = sharding.replicated(mesh)
    log.info("mesh %s over %d devices, %d processes", dict(mesh.shape), mesh.size, jax.process_count())
    training = build_training(config, mesh)
    task, tracing = training.task, training.tracing
    state_sharding, abstract_state = training.state_sharding, training.abstract_state
    resolved_config = _resolved_config(config, task)  # written once the checkpoint fits

    # --- Input.
    train_iter = input_builder(
        config.data,
        split=config.data.get("train_split", "train"),
        task=task.data_task,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )

    # --- State: resume, else initialise from config.init.checkpoint, else fresh.
    manager = checkpointing.CheckpointManager(
        fileio.join(workdir, checkpointing.CHECKPOINTS),
        save_every_steps=config.ckpt.every_steps,
        keep=config.ckpt.keep,
        async_save=config.ckpt.async_save,
    )

    def fresh():
        with tracing():
            state = training.init_state(jax.random.PRNGKey(config.train.seed))
        return state.params, state.rest()

    start = checkpointing.restore_or_init(
        manager,
        abstract_state.params,
        abstract_state.rest(),
        init=fresh,
        init_checkpoint=config.init.checkpoint,
        load_init_params=task.restore_init_params,
        check_init_params=task.check_init_params,
        run_config=resolved_config,
    )
    _write_config(resolved_config, workdir)
    state = TrainState.from_parts(start.params, start.rest)
    if start.origin == "resumed":
        differences = checkpointing.config_differences(
            start.saved_config.get("model"), resolved_config.get("model"), "model"
        )
        if differences:  # same shapes (checked), other settings: allowed, but said
            log.warning("resuming checkpoint %d with other model settings: %s", start.step, "; ".join(differences))
        if start.data_state is not None:
            train_iter.set_state(start.data_state)

    # --- Compiled steps (one executable per distinct batch shape: buckets, not batches).
    eval_step = jax.jit(make_eval_step(task), in_shardings=(state_sharding.params, None, repl), out_shardings=repl)
    # Host-side evaluation (decoding, WER/CER): the task's jitted `eval_outputs` per batch, then
    # `eval_report` over all of them.
    eval_outputs = None
    if task.host_eval:
        eval_outputs = jax.jit(task.eval_outputs, in_shardings=(state_sharding.params, None), out_shardings=repl)
    step_cache = _StepCache(training)

    # --- Loop.
    step = int(jax.device_get(state.step))
    writer = metrics_lib.MetricWriter(
        fileio.join(workdir, "tensorboard"),
        total_steps=total_steps,
        initial_step=step,
        progress_bar=config.train.progress_bar,
        jsonl_path=fileio.join(workdir, "metrics.jsonl"),
    )
    throughput = _Throughput(SAMPLE_RATE, metrics_lib.peak_flops_per_device(config.train.peak_flops_per_device))
    watcher = _PreemptionWatcher(manager)
    max_bad = config.train.max_consecutive_bad_steps
    saved_steps = set(manager.all_steps())

    def save(force: bool) -> None:
        _save(manager, state, step, train_iter, resolved_config, saved_steps, max_bad=max_bad, force=force)

    preempted = False
    try:
        while step < total_steps:
            if watcher.reached(step):
                log.warning("preemption signal at step %d: saving a checkpoint and stopping", step)
                save(force=True)
                preempted = True
                break
            batch = next(train_iter)  # numpy, this process's share of the global batch
            executable, flops, new_shape = step_cache.get(batch)
            if new_shape:  # keep compile time out of perf/
                throughput.reset()
            # The hot path: an explicit placement of the batch, then one dispatch. Implicit
            # host<->device copies here would stall every step (train.transfer_guard).
            with jax.transfer_guard(config.train.get("transfer_guard", "allow")):
                state, last_metrics = executable(state, sharding.shard_batch(batch, mesh))
            step += 1
            throughput.add(batch, flops)
            writer.advance(step)
            manager.check_for_errors()  # a failed background save stops the run at once

            if step % config.train.log_every == 0 or step == total_steps:
                host = {k: float(v) for k, v in jax.device_get(last_metrics).items()}
                host.update(throughput.report())
                writer.write_scalars(step, host)
                for message in task.check_metrics(host):
                    writer.warn(message)
                _check_bad_streak(state, step, max_bad, manager)
                throughput.reset()

            if config.eval.every_steps and (step % config.eval.every_steps == 0 or step == total_steps):
                scalars = evaluate(
                    task,
                    state.params,
                    step,
                    eval_step=eval_step,
                    eval_outputs=eval_outputs,
                    input_builder=input_builder,
                    config=config,
                    mesh=mesh,
                    tracing=tracing,
                    workdir=workdir,
                )
                writer.write_scalars(step, scalars)
                throughput.reset()  # keep eval time out of the throughput
            save(force=False)

        if not preempted:
            save(force=True)
    finally:
        failing = sys.exc_info()[1]
        try:
            manager.close()  # waits for the asynchronous write to be committed
        except checkpointing.CheckpointSaveError:
            # A save that fails for a full disk often shows first as the metric writers' OSError:
            # the failed save is then the cause to report. Other errors propagate as they are.
            if failing is None or isinstance(failing, OSError):
                failing = True
                raise
        finally:
            try:
                writer.close()
            except OSError:
                if failing is None:
                    raise
            watcher.close()
    return state


# ---------------------------------------------------------------------------------------------
# The loop's helpers: explicit arguments, no loop state captured.
# ---------------------------------------------------------------------------------------------


class _StepCache:
    """The train step compiled once per distinct batch shape (length buckets, not batches)."""

    def __init__(self, training: Training):
        self._training = training
        self._compiled: dict[Any, tuple[Any, float]] = {}

    def get(self, batch_host: Batch) -> tuple[Any, float, bool]:
        """(executable, FLOPs per device per step, whether it was compiled just now)."""
        key = tuple(sorted((k, v.shape, str(v.dtype)) for k, v in batch_host.items()))
        if key in self._compiled:
            return (*self._compiled[key], False)
        training = self._training
        with training.tracing():
            exe = training.train_step.lower(
                training.abstract_state, _abstract_batch(batch_host, training.mesh)
            ).compile()
        self._compiled[key] = (exe, _flops_per_step(exe))
        log.info(
            "compiled train step for batch %s (%.3g FLOPs/device/step)",
            {k: v.shape for k, v in batch_host.items()},
            self._compiled[key][1],
        )
        return (*self._compiled[key], True)


class _Throughput:
    """Steps, audio seconds and FLOPs per wall-clock second since the last `reset` (big_vision's chrono)."""

    def __init__(self, sampling_rate: int, peak_flops: float):
        self.sampling_rate, self.peak_flops = sampling_rate, peak_flops
        self.reset()

    def reset(self) -> None:
        """Starts a new measuring window (after compiling, evaluating or logging)."""
        self.start, self.samples, self.flops, self.steps = time.perf_counter(), 0, 0.0, 0

    def add(self, batch: Batch, flops: float) -> None:
        """Counts one step on `batch` (this process's rows; every process has as many)."""
        if "padding_mask" in batch:
            self.samples += int(np.sum(~batch["padding_mask"])) * jax.process_count()
        self.flops += flops
        self.steps += 1

    def report(self) -> dict[str, float]:
        """perf/steps_per_sec, perf/audio_sec_per_sec and (with a known peak) perf/mfu."""
        elapsed = time.perf_counter() - self.start
        out = {
            "perf/steps_per_sec": self.steps / elapsed,
            "perf/audio_sec_per_sec": self.samples / self.sampling_rate / elapsed,
        }
        if self.peak_flops:
            out["perf/mfu"] = self.flops / elapsed / self.peak_flops
        return out


def _check_bad_streak(state: TrainState, step: int, max_bad: int, manager: checkpointing.CheckpointManager) -> None:
    """Raises NonFiniteTrainingError once `max_bad` (> 0) steps in a row were skipped."""
    streak = int(jax.device_get(state.bad_streak))
    if max_bad and streak >= max_bad:
        manager.wait()
        raise NonFiniteTrainingError(
            f"{streak} consecutive steps (up to step {step}) had a non-finite loss or gradient; "
            f"their updates were skipped and training stops. The last checkpoint "
            f"(step {manager.latest_step()}) holds the last good parameters. Look for NaN/inf or silent "
            "audio in the data, lower optim.lr, or use float32."
        )


def _save(
    manager: checkpointing.CheckpointManager,
    state: TrainState,
    step: int,
    train_iter,
    resolved_config: dict[str, Any],
    saved_steps: set[int],
    *,
    max_bad: int,
    force: bool,
) -> bool:
    """Saves `state` at `step` unless that step is saved already or not due; adds it to `saved_steps`.

    A run that is failing (`_check_bad_streak`) raises instead of writing a checkpoint.
    """
    if step in saved_steps or (not force and not manager.should_save(step)):
        return False
    _check_bad_streak(state, step, max_bad, manager)
    saved = manager.save(
        step, state.params, state.rest(), config=resolved_config, data_state=train_iter.get_state(), force=force
    )
    if saved:
        saved_steps.add(step)
    return saved


def evaluate(
    task: Task,
    params: PyTree,
    step: int,
    *,
    eval_step: Callable,
    eval_outputs: Callable | None,
    input_builder: Callable[..., Iterator[Batch]],
    config: ml_collections.ConfigDict,
    mesh: jax.sharding.Mesh,
    tracing: Callable,
    workdir: str,
) -> dict[str, float]:
    """One evaluation pass: `eval/` metrics averaged over up to `config.eval.num_batches` batches,
    plus the task's host-side report when `eval_outputs` is given.

    Args:
      task: the run's task.
      params: the parameters to evaluate (sharded).
      step: the training step (names report files).
      eval_step: jitted `(params, batch, rng) -> {eval/name: scalar}`.
      eval_outputs: jitted `task.eval_outputs`, or None.
      input_builder, config: build the `config.eval.split` input.
      mesh, tracing: where the batch goes and the context for tracing.
      workdir: the run directory (reports go under it on process 0).
    """
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
    close = getattr(eval_iter, "close", None)  # data_pipelines iterators hold reader threads
    if close is not None:
        close()
    result = {k: v / count for k, v in sums.items()} if count else {}
    if eval_outputs is not None and records:
        report = task.eval_report(records, step, workdir if jax.process_index() == 0 else None)
        result.update({f"eval/{k}": float(v) for k, v in report.items()})
    return result
